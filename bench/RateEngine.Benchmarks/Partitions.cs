using System.Net;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks;

/// <summary>The limiter families compared as partitioned limiters (RateEngine's factory against the in-box one).</summary>
internal enum PartitionFamily
{
    /// <summary><c>PartitionedLimiter.CreateFixedWindow</c> against <c>RateLimitPartition.GetFixedWindowLimiter</c>.</summary>
    FixedWindow,

    /// <summary><c>PartitionedLimiter.CreateTokenBucket</c> against <c>RateLimitPartition.GetTokenBucketLimiter</c>.</summary>
    TokenBucket,

    /// <summary><c>PartitionedLimiter.CreateSlidingWindowCounter</c> against <c>RateLimitPartition.GetSlidingWindowLimiter</c>.</summary>
    SlidingWindow,
}

/// <summary>The key types: an int, and strings shaped like IPv4 and IPv6 addresses.</summary>
internal enum PartitionKeyKind
{
    Int,
    IPv4,
    IPv6,
}

/// <summary>Which side of a comparison: the in-box <c>PartitionedRateLimiter.Create</c> or RateEngine's factory.</summary>
internal enum PartitionSide
{
    Inbox,
    Engine,
}

/// <summary>
/// The partitioned limiters every partition benchmark uses (compare mode, BenchmarkDotNet and smoke), their options and
/// their keys, in one place.
/// </summary>
/// <remarks>
/// <para><b>First touch and memory</b> (<see cref="Create{TKey}"/> with <c>held: true</c>): every key gets a limit it
/// cannot use up and that does not come back during a run: <c>int.MaxValue</c> permits per 1 h window (10 segments for
/// the sliding windows), and a token bucket of <see cref="HeldTokenLimit"/> tokens refilled one per hour. So a key that
/// took one permit stays held (not idle) on both sides: nothing is evicted while it is measured.</para>
/// <para><b>Hot keys</b> (<c>held: false</c>): the admit-path options of the single limiters (<see cref="Limiters"/>:
/// <c>int.MaxValue</c> per 1 s, the bucket refilled <c>int.MaxValue</c> tokens per second), which no run can exhaust
/// however long it lasts.</para>
/// <para>RateEngine gets <c>MaxPartitions</c> = <see cref="MaxPartitions"/>, twice the most keys any benchmark creates, so
/// that no key is refused; the in-box limiter has no bound. Options are shared instances (one tier on RateEngine's side;
/// a non-capturing, cached delegate on the in-box side), as an application with one limit for every key would write them.</para>
/// </remarks>
internal static class Partitions
{
    /// <summary>Distinct keys of the first-touch and memory measurements.</summary>
    public const int FirstTouchKeys = 1_000_000;

    /// <summary>Keys of the hot-key measurement.</summary>
    public const int HotKeys = 1_000;

    /// <summary>RateEngine's <c>MaxPartitions</c>: well above every key count used here.</summary>
    public const int MaxPartitions = 2 * FirstTouchKeys;

    /// <summary>Bucket size of the held token bucket: its burst (in clock ticks) fits RateEngine's horizon unsaturated.</summary>
    public const int HeldTokenLimit = 100_000;

    public static readonly TimeSpan HeldWindow = TimeSpan.FromHours(1);

    public static readonly PartitionFamily[] Families = Enum.GetValues<PartitionFamily>();

    public static readonly PartitionKeyKind[] KeyKinds = Enum.GetValues<PartitionKeyKind>();

    private static readonly FixedWindowRateLimiterOptions HeldFixed = new()
    {
        PermitLimit = int.MaxValue, Window = HeldWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    private static readonly TokenBucketRateLimiterOptions HeldBucket = new()
    {
        TokenLimit = HeldTokenLimit, TokensPerPeriod = 1, ReplenishmentPeriod = HeldWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    private static readonly SlidingWindowRateLimiterOptions HeldInboxSliding = new()
    {
        PermitLimit = int.MaxValue, Window = HeldWindow, SegmentsPerWindow = Limiters.Segments, QueueLimit = 0, AutoReplenishment = true,
    };

    private static readonly SlidingWindowCounterRateLimiterOptions HeldCounter = new()
    {
        PermitLimit = int.MaxValue, Window = HeldWindow, SegmentsPerWindow = Limiters.Segments, QueueLimit = 0,
    };

    private static readonly FixedWindowRateLimiterOptions HotFixed = new()
    {
        PermitLimit = int.MaxValue, Window = Limiters.AdmitWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    private static readonly TokenBucketRateLimiterOptions HotBucket = new()
    {
        TokenLimit = int.MaxValue, TokensPerPeriod = int.MaxValue, ReplenishmentPeriod = Limiters.AdmitWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    private static readonly SlidingWindowRateLimiterOptions HotInboxSliding = new()
    {
        PermitLimit = int.MaxValue, Window = Limiters.AdmitWindow, SegmentsPerWindow = Limiters.Segments, QueueLimit = 0, AutoReplenishment = true,
    };

    private static readonly SlidingWindowCounterRateLimiterOptions HotCounter = new()
    {
        PermitLimit = int.MaxValue, Window = Limiters.AdmitWindow, SegmentsPerWindow = Limiters.Segments, QueueLimit = 0,
    };

    /// <summary>A new partitioned limiter whose resource is the key itself.</summary>
    public static PartitionedRateLimiter<TKey> Create<TKey>(PartitionFamily family, PartitionSide side, bool held)
        where TKey : notnull
    {
        var engineOptions = new PartitionedLimiterOptions { MaxPartitions = MaxPartitions };
        return (family, side) switch
        {
            (PartitionFamily.FixedWindow, PartitionSide.Inbox) => held
                ? PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetFixedWindowLimiter(key, static _ => HeldFixed))
                : PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetFixedWindowLimiter(key, static _ => HotFixed)),
            (PartitionFamily.TokenBucket, PartitionSide.Inbox) => held
                ? PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetTokenBucketLimiter(key, static _ => HeldBucket))
                : PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetTokenBucketLimiter(key, static _ => HotBucket)),
            (PartitionFamily.SlidingWindow, PartitionSide.Inbox) => held
                ? PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetSlidingWindowLimiter(key, static _ => HeldInboxSliding))
                : PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetSlidingWindowLimiter(key, static _ => HotInboxSliding)),
            (PartitionFamily.FixedWindow, PartitionSide.Engine) => held
                ? PartitionedLimiter.CreateFixedWindow<TKey, TKey>(static key => key, static _ => HeldFixed, engineOptions)
                : PartitionedLimiter.CreateFixedWindow<TKey, TKey>(static key => key, static _ => HotFixed, engineOptions),
            (PartitionFamily.TokenBucket, PartitionSide.Engine) => held
                ? PartitionedLimiter.CreateTokenBucket<TKey, TKey>(static key => key, static _ => HeldBucket, engineOptions)
                : PartitionedLimiter.CreateTokenBucket<TKey, TKey>(static key => key, static _ => HotBucket, engineOptions),
            (PartitionFamily.SlidingWindow, PartitionSide.Engine) => held
                ? PartitionedLimiter.CreateSlidingWindowCounter<TKey, TKey>(static key => key, static _ => HeldCounter, engineOptions)
                : PartitionedLimiter.CreateSlidingWindowCounter<TKey, TKey>(static key => key, static _ => HotCounter, engineOptions),
            _ => throw new ArgumentOutOfRangeException(nameof(family), family, null),
        };
    }

    /// <summary>Keys held by a RateEngine partitioned limiter (null for an in-box one, which does not say).</summary>
    public static long? PartitionCount<TKey>(PartitionedRateLimiter<TKey> limiter) =>
        (limiter as RateEngine.Partitioning.IPartitionDiagnostics)?.PartitionCount;

    public static string Name(this PartitionFamily family) => family switch
    {
        PartitionFamily.FixedWindow => "fixed window",
        PartitionFamily.TokenBucket => "token bucket",
        _ => "sliding window",
    };

    /// <summary>What each side is, for a family.</summary>
    public static string SideName(this PartitionFamily family, PartitionSide side) => (family, side) switch
    {
        (PartitionFamily.FixedWindow, PartitionSide.Inbox) => "in-box PartitionedRateLimiter + FixedWindowRateLimiter",
        (PartitionFamily.TokenBucket, PartitionSide.Inbox) => "in-box PartitionedRateLimiter + TokenBucketRateLimiter",
        (PartitionFamily.SlidingWindow, PartitionSide.Inbox) => "in-box PartitionedRateLimiter + SlidingWindowRateLimiter",
        (PartitionFamily.FixedWindow, _) => "PartitionedLimiter.CreateFixedWindow",
        (PartitionFamily.TokenBucket, _) => "PartitionedLimiter.CreateTokenBucket",
        _ => "PartitionedLimiter.CreateSlidingWindowCounter",
    };

    public static string Name(this PartitionKeyKind kind) => kind switch
    {
        PartitionKeyKind.Int => "int",
        PartitionKeyKind.IPv4 => "IPv4 string",
        _ => "IPv6 string",
    };

    /// <summary>The target for resident bytes per int key (state plus table), or null where it does not apply.</summary>
    /// <remarks>The sliding-window counter keeps one 8-byte slot per segment (11 for 10 segments), so the 64-byte target,
    /// written for one-word state, is reported for it but not judged.</remarks>
    public static double? BytesPerIntKeyTarget(this PartitionFamily family) => family == PartitionFamily.SlidingWindow ? null : 64;

    /// <summary>The targets for first touch and hot keys: RateEngine at least this many times the in-box rate.</summary>
    public const double RateTarget = 5.0;
}

/// <summary>Distinct keys, reproducible from a seed.</summary>
internal static class PartitionKeys
{
    /// <summary><paramref name="count"/> distinct random ints.</summary>
    public static int[] Ints(int count, int seed)
    {
        var random = new Random(seed);
        var seen = new HashSet<int>(count);
        var keys = new int[count];
        for (int i = 0; i < count;)
        {
            int key = random.Next(int.MinValue, int.MaxValue);
            if (seen.Add(key))
            {
                keys[i++] = key;
            }
        }

        return keys;
    }

    /// <summary><paramref name="count"/> distinct dotted-quad strings ("203.0.113.7") of random 32-bit addresses.</summary>
    public static string[] IPv4(int count, int seed)
    {
        var random = new Random(seed);
        var seen = new HashSet<uint>(count);
        var keys = new string[count];
        for (int i = 0; i < count;)
        {
            uint address = (uint)random.NextInt64(0, 1L << 32);
            if (seen.Add(address))
            {
                keys[i++] = string.Create(
                    System.Globalization.CultureInfo.InvariantCulture,
                    $"{address >> 24}.{(address >> 16) & 0xFF}.{(address >> 8) & 0xFF}.{address & 0xFF}");
            }
        }

        return keys;
    }

    /// <summary>
    /// <paramref name="count"/> distinct IPv6 strings in 2001:db8::/32 with 96 random bits, formatted by
    /// <see cref="IPAddress.ToString"/> ("2001:db8:85a3:8d3:1319:8a2e:370:7348", 35–39 characters).
    /// </summary>
    public static string[] IPv6(int count, int seed)
    {
        var random = new Random(seed);
        var seen = new HashSet<UInt128>(count);
        var keys = new string[count];
        Span<byte> bytes = stackalloc byte[16];
        for (int i = 0; i < count;)
        {
            bytes[0] = 0x20;
            bytes[1] = 0x01;
            bytes[2] = 0x0d;
            bytes[3] = 0xb8;
            random.NextBytes(bytes[4..]);
            if (seen.Add(System.Buffers.Binary.BinaryPrimitives.ReadUInt128BigEndian(bytes)))
            {
                keys[i++] = new IPAddress(bytes).ToString();
            }
        }

        return keys;
    }

    /// <summary><paramref name="count"/> random indices below <paramref name="keys"/>: the order a hot-key thread visits its keys in.</summary>
    public static int[] Order(int count, int keys, int seed)
    {
        var random = new Random(seed);
        var order = new int[count];
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = random.Next(keys);
        }

        return order;
    }
}

/// <summary>
/// Tags that give each (side, family) pair its own compiled copy of the partition loops, so that every limiter type has
/// its own call site and PGO profile, as in an application that uses one limiter (see <see cref="IAcquirer"/>).
/// </summary>
internal interface IPartitionTag
{
    static abstract PartitionSide Side { get; }

    static abstract PartitionFamily Family { get; }
}

internal readonly struct InboxFixedTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.FixedWindow;
}

internal readonly struct InboxBucketTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.TokenBucket;
}

internal readonly struct InboxSlidingTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.SlidingWindow;
}

internal readonly struct EngineFixedTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.FixedWindow;
}

internal readonly struct EngineBucketTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.TokenBucket;
}

internal readonly struct EngineCounterTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.SlidingWindow;
}

/// <summary>The measured partition loops, one compiled copy per key type and <see cref="IPartitionTag"/>.</summary>
internal static class PartitionLoops
{
    /// <summary>One <c>AttemptAcquire(key)</c> + <c>Dispose</c> per key of <paramref name="keys"/>[start..end); returns the admissions.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Touch<TKey, TTag>(PartitionedRateLimiter<TKey> limiter, TKey[] keys, int start, int end)
        where TKey : notnull
        where TTag : struct, IPartitionTag
    {
        long acquired = 0;
        for (int i = start; i < end; i++)
        {
            RateLimitLease lease = limiter.AttemptAcquire(keys[i]);
            if (lease.IsAcquired)
            {
                acquired++;
            }

            lease.Dispose();
        }

        return acquired;
    }

    /// <summary>
    /// <paramref name="count"/> attempts on keys picked by <paramref name="order"/> (a power-of-two long list of indices
    /// into <paramref name="keys"/>) from position <paramref name="cursor"/> on; returns the admissions.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Hot<TKey, TTag>(PartitionedRateLimiter<TKey> limiter, TKey[] keys, int[] order, ref int cursor, long count)
        where TKey : notnull
        where TTag : struct, IPartitionTag
    {
        long acquired = 0;
        int mask = order.Length - 1;
        int position = cursor;
        for (long i = 0; i < count; i++)
        {
            RateLimitLease lease = limiter.AttemptAcquire(keys[order[position]]);
            position = (position + 1) & mask;
            if (lease.IsAcquired)
            {
                acquired++;
            }

            lease.Dispose();
        }

        cursor = position;
        return acquired;
    }
}

/// <summary>
/// One (family, side, key type) combination with its loops bound: what the harness and the suite call without knowing
/// the key type or the tag.
/// </summary>
internal abstract class PartitionSubject
{
    protected PartitionSubject(PartitionFamily family, PartitionSide side, PartitionKeyKind keyKind)
    {
        Family = family;
        Side = side;
        KeyKind = keyKind;
    }

    public PartitionFamily Family { get; }

    public PartitionSide Side { get; }

    public PartitionKeyKind KeyKind { get; }

    public static PartitionSubject Create<TKey>(PartitionFamily family, PartitionSide side, PartitionKeyKind keyKind, TKey[] keys)
        where TKey : notnull => (family, side) switch
        {
            (PartitionFamily.FixedWindow, PartitionSide.Inbox) => new PartitionSubject<TKey, InboxFixedTag>(keyKind, keys),
            (PartitionFamily.TokenBucket, PartitionSide.Inbox) => new PartitionSubject<TKey, InboxBucketTag>(keyKind, keys),
            (PartitionFamily.SlidingWindow, PartitionSide.Inbox) => new PartitionSubject<TKey, InboxSlidingTag>(keyKind, keys),
            (PartitionFamily.FixedWindow, PartitionSide.Engine) => new PartitionSubject<TKey, EngineFixedTag>(keyKind, keys),
            (PartitionFamily.TokenBucket, PartitionSide.Engine) => new PartitionSubject<TKey, EngineBucketTag>(keyKind, keys),
            _ => new PartitionSubject<TKey, EngineCounterTag>(keyKind, keys),
        };

    /// <summary>A fresh limiter with the first-touch (held) options.</summary>
    public abstract FirstTouchRun StartFirstTouch();

    /// <summary>A limiter with the hot-key options that already holds the first <paramref name="hotKeys"/> keys.</summary>
    public abstract HotKeyTarget CreateHot(int hotKeys);
}

/// <summary>A fresh held-options limiter and the keys to touch on it.</summary>
internal abstract class FirstTouchRun : IDisposable
{
    /// <summary>One attempt per key [start, end) on this run's limiter; returns the admissions.</summary>
    public abstract long Touch(int start, int end);

    /// <summary>Keys RateEngine's limiter holds, or null for the in-box one.</summary>
    public abstract long? PartitionCount { get; }

    public abstract void Dispose();
}

/// <summary>A limiter holding the hot keys; <see cref="Worker"/> gives each thread its own order of visits.</summary>
internal abstract class HotKeyTarget : IDisposable
{
    /// <summary>A per-thread loop body over the hot keys (its own random order, from <paramref name="seed"/>).</summary>
    public abstract Func<long, long> Worker(int seed);

    public abstract void Dispose();
}

internal sealed class PartitionSubject<TKey, TTag>(PartitionKeyKind keyKind, TKey[] keys)
    : PartitionSubject(TTag.Family, TTag.Side, keyKind)
    where TKey : notnull
    where TTag : struct, IPartitionTag
{
    /// <summary>Length of each hot-key thread's visiting order (a power of two; 256 KB of indices).</summary>
    private const int OrderLength = 1 << 16;

    public override FirstTouchRun StartFirstTouch() => new Run(Partitions.Create<TKey>(Family, Side, held: true), keys);

    public override HotKeyTarget CreateHot(int hotKeys)
    {
        PartitionedRateLimiter<TKey> limiter = Partitions.Create<TKey>(Family, Side, held: false);
        TKey[] hot = keys[..hotKeys];
        long acquired = PartitionLoops.Touch<TKey, TTag>(limiter, hot, 0, hot.Length);
        Check.That(acquired == hot.Length, $"{Family.SideName(Side)}, {KeyKind.Name()} keys: {acquired} of {hot.Length} hot keys admitted on creation");
        return new Hot(limiter, hot);
    }

    private sealed class Run(PartitionedRateLimiter<TKey> limiter, TKey[] keys) : FirstTouchRun
    {
        public override long? PartitionCount => Partitions.PartitionCount(limiter);

        public override long Touch(int start, int end) => PartitionLoops.Touch<TKey, TTag>(limiter, keys, start, end);

        public override void Dispose() => limiter.Dispose();
    }

    private sealed class Hot(PartitionedRateLimiter<TKey> limiter, TKey[] keys) : HotKeyTarget
    {
        public override Func<long, long> Worker(int seed)
        {
            int[] order = PartitionKeys.Order(OrderLength, keys.Length, seed);
            int cursor = 0;
            return count => PartitionLoops.Hot<TKey, TTag>(limiter, keys, order, ref cursor, count);
        }

        public override void Dispose() => limiter.Dispose();
    }
}
