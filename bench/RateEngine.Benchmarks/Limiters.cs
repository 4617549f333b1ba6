using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks;

/// <summary>
/// The limiter configurations every suite uses, in one place so that BenchmarkDotNet, the compare harness and the smoke
/// run measure the same thing.
/// </summary>
/// <remarks>
/// <para><b>Admit path</b>: a limit the benchmark can never reach. In-box limiters and RateEngine's counter, fixed window
/// and bucket get <c>int.MaxValue</c> permits per 1 s window (or per 1 s replenishment period, timers on), which even at
/// 100 M ops/s is never exhausted. The log keeps one 24-byte entry per permit, so it gets 1,024 permits per 1 µs instead:
/// it would take more than one admission per nanosecond to fill that.</para>
/// <para><b>Reject path</b>: one permit per hour, taken when the limiter is created, so every later attempt is turned down.</para>
/// <para>Callers check this: every suite counts admissions and fails if an admit-path run rejected or a reject-path run admitted.</para>
/// </remarks>
internal static class Limiters
{
    public static readonly TimeSpan AdmitWindow = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan RejectWindow = TimeSpan.FromHours(1);
    public const int Segments = 10;
    public const int LogAdmitLimit = 1024;
    public static readonly TimeSpan LogAdmitWindow = TimeSpan.FromMicroseconds(1);

    /// <summary>A limiter that admits every attempt of a benchmark.</summary>
    public static RateLimiter CreateAdmitting(LimiterKind kind, int queueLimit = 0, QueueProcessingOrder order = QueueProcessingOrder.OldestFirst) => kind switch
    {
        LimiterKind.InboxSliding => new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
        {
            PermitLimit = int.MaxValue, Window = AdmitWindow, SegmentsPerWindow = Segments,
            QueueLimit = queueLimit, QueueProcessingOrder = order, AutoReplenishment = true,
        }),
        LimiterKind.Log => new SlidingWindowLogRateLimiter(new SlidingWindowLogRateLimiterOptions
        {
            PermitLimit = LogAdmitLimit, Window = LogAdmitWindow, QueueLimit = queueLimit, QueueProcessingOrder = order,
        }),
        LimiterKind.Counter => new SlidingWindowCounterRateLimiter(new SlidingWindowCounterRateLimiterOptions
        {
            PermitLimit = int.MaxValue, Window = AdmitWindow, SegmentsPerWindow = Segments,
            QueueLimit = queueLimit, QueueProcessingOrder = order,
        }),
        LimiterKind.InboxFixed => new FixedWindowRateLimiter(FixedOptions(int.MaxValue, AdmitWindow, queueLimit, order)),
        LimiterKind.LockFreeFixed => new LockFreeFixedWindowRateLimiter(FixedOptions(int.MaxValue, AdmitWindow, queueLimit, order)),
        LimiterKind.InboxBucket => new TokenBucketRateLimiter(BucketOptions(int.MaxValue, AdmitWindow, queueLimit, order)),
        LimiterKind.LockFreeBucket => new LockFreeTokenBucketRateLimiter(BucketOptions(int.MaxValue, AdmitWindow, queueLimit, order)),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>A limiter whose only permit is already taken for the next hour, so it rejects every attempt.</summary>
    public static RateLimiter CreateExhausted(LimiterKind kind, int queueLimit = 0, QueueProcessingOrder order = QueueProcessingOrder.OldestFirst)
    {
        RateLimiter limiter = kind switch
        {
            LimiterKind.InboxSliding => new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
            {
                PermitLimit = 1, Window = RejectWindow, SegmentsPerWindow = Segments,
                QueueLimit = queueLimit, QueueProcessingOrder = order, AutoReplenishment = true,
            }),
            LimiterKind.Log => new SlidingWindowLogRateLimiter(new SlidingWindowLogRateLimiterOptions
            {
                PermitLimit = 1, Window = RejectWindow, QueueLimit = queueLimit, QueueProcessingOrder = order,
            }),
            LimiterKind.Counter => new SlidingWindowCounterRateLimiter(new SlidingWindowCounterRateLimiterOptions
            {
                PermitLimit = 1, Window = RejectWindow, SegmentsPerWindow = Segments, QueueLimit = queueLimit, QueueProcessingOrder = order,
            }),
            LimiterKind.InboxFixed => new FixedWindowRateLimiter(FixedOptions(1, RejectWindow, queueLimit, order)),
            LimiterKind.LockFreeFixed => new LockFreeFixedWindowRateLimiter(FixedOptions(1, RejectWindow, queueLimit, order)),
            LimiterKind.InboxBucket => new TokenBucketRateLimiter(BucketOptions(1, RejectWindow, queueLimit, order)),
            LimiterKind.LockFreeBucket => new LockFreeTokenBucketRateLimiter(BucketOptions(1, RejectWindow, queueLimit, order)),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
        };

        using (RateLimitLease first = limiter.AttemptAcquire(1))
        {
            Check.That(first.IsAcquired, $"{kind}: the first permit of a fresh limiter was refused");
        }

        using (RateLimitLease second = limiter.AttemptAcquire(1))
        {
            Check.That(!second.IsAcquired, $"{kind}: an exhausted limiter admitted");
        }

        return limiter;
    }

    private static FixedWindowRateLimiterOptions FixedOptions(int limit, TimeSpan window, int queueLimit, QueueProcessingOrder order) => new()
    {
        PermitLimit = limit, Window = window, QueueLimit = queueLimit, QueueProcessingOrder = order, AutoReplenishment = true,
    };

    private static TokenBucketRateLimiterOptions BucketOptions(int limit, TimeSpan period, int queueLimit, QueueProcessingOrder order) => new()
    {
        TokenLimit = limit, TokensPerPeriod = limit, ReplenishmentPeriod = period,
        QueueLimit = queueLimit, QueueProcessingOrder = order, AutoReplenishment = true,
    };
}

/// <summary>The seven limiters under test.</summary>
internal enum LimiterKind
{
    InboxSliding,
    Log,
    Counter,
    InboxFixed,
    LockFreeFixed,
    InboxBucket,
    LockFreeBucket,
}

/// <summary>Names, families and baselines of <see cref="LimiterKind"/>.</summary>
internal static class LimiterKinds
{
    public static readonly LimiterKind[] All = Enum.GetValues<LimiterKind>();

    public static bool IsInbox(this LimiterKind kind) =>
        kind is LimiterKind.InboxSliding or LimiterKind.InboxFixed or LimiterKind.InboxBucket;

    /// <summary>The in-box limiter a RateEngine limiter is compared with (itself for an in-box one).</summary>
    public static LimiterKind Baseline(this LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding or LimiterKind.Log or LimiterKind.Counter => LimiterKind.InboxSliding,
        LimiterKind.InboxFixed or LimiterKind.LockFreeFixed => LimiterKind.InboxFixed,
        _ => LimiterKind.InboxBucket,
    };

    public static string DisplayName(this LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding => "in-box SlidingWindowRateLimiter",
        LimiterKind.Log => "SlidingWindowLogRateLimiter",
        LimiterKind.Counter => "SlidingWindowCounterRateLimiter",
        LimiterKind.InboxFixed => "in-box FixedWindowRateLimiter",
        LimiterKind.LockFreeFixed => "LockFreeFixedWindowRateLimiter",
        LimiterKind.InboxBucket => "in-box TokenBucketRateLimiter",
        LimiterKind.LockFreeBucket => "LockFreeTokenBucketRateLimiter",
        _ => kind.ToString(),
    };

    public static string ShortName(this LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding => "in-box sliding",
        LimiterKind.Log => "log",
        LimiterKind.Counter => "counter",
        LimiterKind.InboxFixed => "in-box fixed",
        LimiterKind.LockFreeFixed => "lock-free fixed",
        LimiterKind.InboxBucket => "in-box bucket",
        LimiterKind.LockFreeBucket => "lock-free bucket",
        _ => kind.ToString(),
    };

    /// <summary>The single-thread ns/op target of the issue (ratio to in-box, at most), or null for in-box limiters.</summary>
    public static double? LatencyTarget(this LimiterKind kind) => kind switch
    {
        LimiterKind.Log => 1.5,
        LimiterKind.Counter or LimiterKind.LockFreeFixed or LimiterKind.LockFreeBucket => 0.5,
        _ => null,
    };

    /// <summary>The 2-thread throughput target of the issue (ratio to in-box, at least), or null for in-box limiters.</summary>
    public static double? ThroughputTarget(this LimiterKind kind) => kind switch
    {
        LimiterKind.Log => 3.0,
        LimiterKind.Counter or LimiterKind.LockFreeFixed or LimiterKind.LockFreeBucket => 5.0,
        _ => null,
    };
}

/// <summary>
/// One attempt through the limiter's concrete (sealed) type. Each implementation is a struct, so every generic loop
/// instantiated over it is compiled separately: each limiter gets its own call site and its own PGO profile, as it would
/// in an application that uses one limiter type, instead of all seven sharing one polymorphic call site.
/// </summary>
internal interface IAcquirer
{
    static abstract LimiterKind Kind { get; }

    static abstract RateLimitLease Acquire(RateLimiter limiter);
}

internal readonly struct InboxSlidingAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.InboxSliding;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<SlidingWindowRateLimiter>(limiter).AttemptAcquire(1);
}

internal readonly struct LogAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.Log;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<SlidingWindowLogRateLimiter>(limiter).AttemptAcquire(1);
}

internal readonly struct CounterAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.Counter;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<SlidingWindowCounterRateLimiter>(limiter).AttemptAcquire(1);
}

internal readonly struct InboxFixedAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.InboxFixed;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<FixedWindowRateLimiter>(limiter).AttemptAcquire(1);
}

internal readonly struct LockFreeFixedAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.LockFreeFixed;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<LockFreeFixedWindowRateLimiter>(limiter).AttemptAcquire(1);
}

internal readonly struct InboxBucketAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.InboxBucket;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<TokenBucketRateLimiter>(limiter).AttemptAcquire(1);
}

internal readonly struct LockFreeBucketAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.LockFreeBucket;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<LockFreeTokenBucketRateLimiter>(limiter).AttemptAcquire(1);
}

/// <summary>The measured loops, one compiled copy per <see cref="IAcquirer"/>.</summary>
internal static class Loops
{
    /// <summary><paramref name="count"/> attempts, each disposed; returns how many were admitted.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Attempt<TAcquirer>(RateLimiter limiter, long count)
        where TAcquirer : struct, IAcquirer
    {
        long acquired = 0;
        for (long i = 0; i < count; i++)
        {
            RateLimitLease lease = TAcquirer.Acquire(limiter);
            if (lease.IsAcquired)
            {
                acquired++;
            }

            lease.Dispose();
        }

        return acquired;
    }

    /// <summary>The ceiling: <paramref name="count"/> bare increments of one shared counter.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Increment(SharedCounter counter, long count)
    {
        for (long i = 0; i < count; i++)
        {
            Interlocked.Increment(ref counter.Value);
        }

        return count;
    }

    /// <summary>The loop for <paramref name="kind"/>, as a delegate (called once per batch, so its cost is amortized).</summary>
    public static Func<RateLimiter, long, long> For(LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding => Attempt<InboxSlidingAcquirer>,
        LimiterKind.Log => Attempt<LogAcquirer>,
        LimiterKind.Counter => Attempt<CounterAcquirer>,
        LimiterKind.InboxFixed => Attempt<InboxFixedAcquirer>,
        LimiterKind.LockFreeFixed => Attempt<LockFreeFixedAcquirer>,
        LimiterKind.InboxBucket => Attempt<InboxBucketAcquirer>,
        LimiterKind.LockFreeBucket => Attempt<LockFreeBucketAcquirer>,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };
}

/// <summary>A counter alone on its cache lines, for the Interlocked ceiling.</summary>
internal sealed class SharedCounter
{
#pragma warning disable IDE0051, CS0169 // padding: keeps Value off the object header's and neighbours' cache lines
    private readonly long _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7;
#pragma warning restore IDE0051, CS0169
    public long Value;
#pragma warning disable IDE0051, CS0169
    private readonly long _q0, _q1, _q2, _q3, _q4, _q5, _q6, _q7;
#pragma warning restore IDE0051, CS0169
}

/// <summary>Checks that stay on in Release: a benchmark that measured the wrong path must fail, not report.</summary>
internal static class Check
{
    public static void That(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(message);
        }
    }
}
