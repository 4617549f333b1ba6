using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>
/// The limiter configurations every suite uses, in one place so that BenchmarkDotNet, the compare harness and the smoke
/// run measure the same thing.
/// </summary>
/// <remarks>
/// <para><b>Admit path</b>: a limit the benchmark can never reach. In-box limiters and RateEngine's counter, fixed window
/// and bucket get <c>int.MaxValue</c> permits per 1 s window (or per 1 s replenishment period, timers on), which even at
/// 100 M ops/s is never exhausted. The log keeps one 24-byte entry per permit, so it gets 1,024 permits per 1 µs instead:
/// it would take more than one admission per nanosecond to fill that. The log with per-core blocks gets 524,288 permits per
/// 8 ms (65 M/s; its blocks live 1/256 of the window, 31 µs, where 1 µs would leave them 4 ns); on the coarse clock, whose
/// 1 ms ticks (and a ticker late by a few) stamp a millisecond's admissions alike, 1,048,576 per 4 ms.</para>
/// <para><b>Reject path</b>: one permit per hour, taken when the limiter is created, so every later attempt is turned down.</para>
/// <para>Callers check this: every suite counts admissions and fails if an admit-path run rejected or a reject-path run admitted.</para>
/// </remarks>
internal static class LimiterSetup
{
    public static readonly TimeSpan AdmitWindow = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan RejectWindow = TimeSpan.FromHours(1);
    public const int Segments = 10;
    public const int LogAdmitLimit = 1024;
    public static readonly TimeSpan LogAdmitWindow = TimeSpan.FromMicroseconds(1);
    public const int PerCoreLogAdmitLimit = 1 << 19;
    public static readonly TimeSpan PerCoreLogAdmitWindow = TimeSpan.FromMilliseconds(8);
    public const int CoarsePerCoreLogAdmitLimit = 1 << 20;
    public static readonly TimeSpan CoarsePerCoreLogAdmitWindow = TimeSpan.FromMilliseconds(4);

    /// <summary>A limiter that admits every attempt of a benchmark.</summary>
    public static RateLimiter CreateAdmitting(LimiterKind kind, int queueLimit = 0, QueueProcessingOrder order = QueueProcessingOrder.OldestFirst) =>
        Create(kind, admitting: true, queueLimit, order, TimeProvider.System);

    /// <summary>
    /// A RateEngine limiter that admits every attempt of a benchmark, on <paramref name="time"/> (the clock-choice
    /// measurements: the same limiter on <see cref="CoarseTimeProvider"/>). In-box limiters read no clock per attempt.
    /// </summary>
    public static RateLimiter CreateAdmitting(LimiterKind kind, TimeProvider time)
    {
        Check.That(!kind.IsInbox(), $"{kind}: in-box limiters are timer-driven; a TimeProvider would change nothing per attempt");
        return Create(kind, admitting: true, queueLimit: 0, QueueProcessingOrder.OldestFirst, time);
    }

    /// <summary>
    /// A RateEngine log, fixed window, counter or bucket with per-core blocks (default <see cref="PerCoreReservationOptions"/>)
    /// that admits every attempt of a benchmark, on <paramref name="time"/>: issue 13's shared limiters that scale.
    /// </summary>
    public static RateLimiter CreatePerCoreAdmitting(LimiterKind kind, TimeProvider time)
    {
        var perCore = new PerCoreReservationOptions();
        return kind switch
        {
            LimiterKind.LockFreeFixed => new LockFreeFixedWindowRateLimiter(FixedOptions(int.MaxValue, AdmitWindow, 0, QueueProcessingOrder.OldestFirst), perCore, time),
            LimiterKind.Counter => new SlidingWindowCounterRateLimiter(
                new SlidingWindowCounterRateLimiterOptions { PermitLimit = int.MaxValue, Window = AdmitWindow, SegmentsPerWindow = Segments }, perCore, time),
            LimiterKind.LockFreeBucket => new LockFreeTokenBucketRateLimiter(BucketOptions(int.MaxValue, AdmitWindow, 0, QueueProcessingOrder.OldestFirst), perCore, time),
            LimiterKind.Log or LimiterKind.PerCoreLog => Create(LimiterKind.PerCoreLog, admitting: true, 0, QueueProcessingOrder.OldestFirst, time),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "per-core blocks serve RateEngine's log, fixed window, counter and bucket"),
        };
    }

    /// <summary>A limiter whose only permit is already taken for the next hour, so it rejects every attempt.</summary>
    public static RateLimiter CreateExhausted(LimiterKind kind, int queueLimit = 0, QueueProcessingOrder order = QueueProcessingOrder.OldestFirst)
    {
        RateLimiter limiter = Create(kind, admitting: false, queueLimit, order, TimeProvider.System);
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

    /// <summary>The one place that maps a <see cref="LimiterKind"/> to its limiter, on either path.</summary>
    private static RateLimiter Create(LimiterKind kind, bool admitting, int queueLimit, QueueProcessingOrder order, TimeProvider time)
    {
        int limit = admitting ? int.MaxValue : 1;
        TimeSpan window = admitting ? AdmitWindow : RejectWindow;
        return kind switch
        {
            LimiterKind.InboxSliding => new SlidingWindowRateLimiter(new SlidingWindowRateLimiterOptions
            {
                PermitLimit = limit, Window = window, SegmentsPerWindow = Segments,
                QueueLimit = queueLimit, QueueProcessingOrder = order, AutoReplenishment = true,
            }),
            LimiterKind.Log => new SlidingWindowLogRateLimiter(new SlidingWindowLogRateLimiterOptions
            {
                PermitLimit = admitting ? LogAdmitLimit : 1, Window = admitting ? LogAdmitWindow : RejectWindow,
                QueueLimit = queueLimit, QueueProcessingOrder = order,
            }, time),
            LimiterKind.PerCoreLog => new SlidingWindowLogRateLimiter(new SlidingWindowLogRateLimiterOptions
            {
                PermitLimit = !admitting ? 1 : time is CoarseTimeProvider ? CoarsePerCoreLogAdmitLimit : PerCoreLogAdmitLimit,
                Window = !admitting ? RejectWindow : time is CoarseTimeProvider ? CoarsePerCoreLogAdmitWindow : PerCoreLogAdmitWindow,
                QueueLimit = queueLimit, QueueProcessingOrder = order,
            }, new PerCoreReservationOptions(), time),
            LimiterKind.Counter => new SlidingWindowCounterRateLimiter(new SlidingWindowCounterRateLimiterOptions
            {
                PermitLimit = limit, Window = window, SegmentsPerWindow = Segments, QueueLimit = queueLimit, QueueProcessingOrder = order,
            }, time),
            LimiterKind.InboxFixed => new FixedWindowRateLimiter(FixedOptions(limit, window, queueLimit, order)),
            LimiterKind.LockFreeFixed => new LockFreeFixedWindowRateLimiter(FixedOptions(limit, window, queueLimit, order), time),
            LimiterKind.InboxBucket => new TokenBucketRateLimiter(BucketOptions(limit, window, queueLimit, order)),
            LimiterKind.LockFreeBucket => new LockFreeTokenBucketRateLimiter(BucketOptions(limit, window, queueLimit, order), time),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
        };
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
