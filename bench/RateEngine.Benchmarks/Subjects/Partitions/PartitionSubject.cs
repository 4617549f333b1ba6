using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>
/// One (family, side, key type) combination with its loops bound: what the harness and the suite call without knowing
/// the key type or the tag.
/// </summary>
internal abstract class PartitionSubject
{
    protected PartitionSubject(PartitionFamily family, PartitionSide side, string limiterName, PartitionKeyKind keyKind)
    {
        Family = family;
        Side = side;
        LimiterName = limiterName;
        KeyKind = keyKind;
    }

    public PartitionFamily Family { get; }

    public PartitionSide Side { get; }

    /// <summary>What the limiter is (<see cref="IPartitionTag.Name"/>).</summary>
    public string LimiterName { get; }

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

    /// <summary>RateEngine's limiter of <paramref name="family"/> with per-core blocks for hot keys (<see cref="EngineHotPerCore"/>).</summary>
    public static PartitionSubject CreatePerCore<TKey>(PartitionFamily family, PartitionKeyKind keyKind, TKey[] keys)
        where TKey : notnull => family switch
        {
            PartitionFamily.FixedWindow => new PartitionSubject<TKey, EngineFixedPerCoreTag>(keyKind, keys),
            PartitionFamily.TokenBucket => new PartitionSubject<TKey, EngineBucketPerCoreTag>(keyKind, keys),
            _ => new PartitionSubject<TKey, EngineCounterPerCoreTag>(keyKind, keys),
        };

    /// <summary>A fresh limiter with the first-touch (held) options.</summary>
    public abstract FirstTouchRun StartFirstTouch();

    /// <summary>A limiter with the hot-key options that already holds the first <paramref name="hotKeys"/> keys.</summary>
    public abstract HotKeyTarget CreateHot(int hotKeys);
}

/// <summary>The subject for keys of type <typeparamref name="TKey"/> on the limiter <typeparamref name="TTag"/> stands for.</summary>
internal sealed class PartitionSubject<TKey, TTag>(PartitionKeyKind keyKind, TKey[] keys)
    : PartitionSubject(TTag.Family, TTag.Side, TTag.Name, keyKind)
    where TKey : notnull
    where TTag : struct, IPartitionTag
{
    /// <summary>Length of each hot-key thread's visiting order (a power of two; 256 KB of indices).</summary>
    private const int OrderLength = 1 << 16;

    public override FirstTouchRun StartFirstTouch() => new Run(TTag.Create<TKey>(held: true), keys);

    public override HotKeyTarget CreateHot(int hotKeys)
    {
        PartitionedRateLimiter<TKey> limiter = TTag.Create<TKey>(held: false);
        TKey[] hot = keys[..hotKeys];
        long acquired = PartitionLoops.Touch<TKey, TTag>(limiter, hot, 0, hot.Length);
        Check.That(acquired == hot.Length, $"{LimiterName}, {KeyKind.Name()} keys: {acquired} of {hot.Length} hot keys admitted on creation");
        return new Hot(limiter, hot);
    }

    private sealed class Run(PartitionedRateLimiter<TKey> limiter, TKey[] keys) : FirstTouchRun
    {
        public override long? PartitionCount => PartitionSetup.PartitionCount(limiter);

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
