using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The <see cref="System.Threading.RateLimiting"/> contract that every RateEngine limiter keeps, written once and run
/// against each limiter (and each replenishment mode) by a derived class.
/// </summary>
/// <remarks>
/// <para>The tests know nothing of the algorithms. They get limiters from <see cref="Create"/>, free every permit taken
/// so far with <see cref="Replenish"/> (automatic limiters advance the fake clock and let the limiter's own timer serve
/// waiters; manual ones also call <c>TryReplenish</c>), and ask <see cref="ExpectedRetryAfter"/> for the one value that
/// differs per algorithm.</para>
/// <para>Time comes only from <see cref="FakeTimeProvider"/>: nothing sleeps. Waiters are completed synchronously by
/// <c>Advance</c> or <c>TryReplenish</c>, so a test checks <c>IsCompleted</c> right after the call that should serve
/// them; awaits carry a timeout only as a guard against a hang.</para>
/// </remarks>
public abstract partial class RateLimiterContractTests
{
    /// <summary>The window (or replenishment period) every derived factory uses, so that expectations can be computed.</summary>
    protected static readonly TimeSpan Window = TimeSpan.FromSeconds(10);

    /// <summary>A guard for awaits: a correct test never gets near it.</summary>
    protected static readonly TimeSpan GuardTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Less time than any permit needs to return at the limits the tests use (the earliest: a 4-token bucket, 2.5 s).</summary>
    protected static readonly TimeSpan ShortWhile = TimeSpan.FromSeconds(1);

    private const QueueProcessingOrder OldestFirst = QueueProcessingOrder.OldestFirst;
    private const QueueProcessingOrder NewestFirst = QueueProcessingOrder.NewestFirst;

    /// <summary>
    /// A limiter on <paramref name="time"/>, created at the clock's current time, whose window (or period) is
    /// <see cref="Window"/>.
    /// </summary>
    protected abstract ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time);

    /// <summary>
    /// Makes every permit taken so far available again and lets the limiter serve its waiters: advances the clock far
    /// enough and, for manual replenishment, calls <c>TryReplenish</c>. Permits taken by waiters served during the call
    /// stay taken.
    /// </summary>
    protected abstract void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time);

    /// <summary>
    /// The <c>RETRY_AFTER</c> of a failed request when all <paramref name="permitLimit"/> permits were taken at once when
    /// the limiter was created, <paramref name="elapsed"/> (less than the time any permit needs to return) has passed
    /// since without any replenishment, and the request needs <paramref name="permits"/> permits free (its own plus those
    /// queued ahead of it): the real time until they would be.
    /// </summary>
    protected abstract TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed);

    /// <summary>What <see cref="ReplenishingRateLimiter.IsAutoReplenishing"/> must report.</summary>
    protected abstract bool ExpectedAutoReplenishing { get; }

    /// <summary>What <see cref="ReplenishingRateLimiter.ReplenishmentPeriod"/> must report.</summary>
    protected abstract TimeSpan ExpectedReplenishmentPeriod { get; }

    /// <summary>The parameter name of the exception for a request above the permit limit.</summary>
    protected virtual string OverLimitParamName => "permitCount";

    /// <summary>The largest permit limit the overflow test uses: int.MaxValue unless the limiter cannot hold that many.</summary>
    protected virtual int LargePermitLimit => int.MaxValue;

    /// <summary>How long after a full limit is taken at once it is all back: how much later each further limit can pass.</summary>
    protected virtual TimeSpan FullRefill => Window;

    /// <summary>
    /// Advances the clock by <paramref name="span"/> as time passes for an application: a manual limiter is replenished
    /// every millisecond, as its timer would do it (an automatic one ignores that). A span of more than a minute (a clock
    /// catching up after a step back; never one with waiters, whose wake-ups must run on time) is walked that way only over
    /// its last <see cref="FullRefill"/> and a second, after one jump of whole milliseconds and a replenish.
    /// </summary>
    protected void AdvanceReplenishing(ReplenishingRateLimiter limiter, FakeTimeProvider time, TimeSpan span)
    {
        TimeSpan step = TimeSpan.FromMilliseconds(1);
        TimeSpan walked = FullRefill + TimeSpan.FromSeconds(1);
        if (span > TimeSpan.FromMinutes(1))
        {
            TimeSpan jump = TimeSpan.FromMilliseconds(Math.Floor((span - walked).TotalMilliseconds));
            time.Advance(jump);
            limiter.TryReplenish();
            span -= jump;
        }

        for (TimeSpan left = span; left > TimeSpan.Zero; left -= step)
        {
            time.Advance(left < step ? left : step);
            limiter.TryReplenish();
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Basics

    [Fact]
    public void AttemptAcquire_UpToPermitLimit_SucceedsThenFails()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 0, OldestFirst, time);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        using RateLimitLease rejected = limiter.AttemptAcquire(1);

        Assert.False(rejected.IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_AfterReplenish_SucceedsAgain()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);

        Replenish(limiter, time);

        Assert.Equal(3, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_NotReplenished_KeepsFailing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        time.Advance(ShortWhile);

        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_WithAvailability_CompletesImmediately()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 1, OldestFirst, time);

        Task<RateLimitLease> acquire = limiter.AcquireAsync(2).AsTask();

        Assert.True(acquire.IsCompletedSuccessfully);
        Assert.True((await acquire).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_WithoutAvailability_WaitsForReplenishment()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Task<RateLimitLease> wait = Enqueue(limiter, 1);
        time.Advance(ShortWhile);
        Assert.False(wait.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(wait)).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Helpers

    /// <summary>
    /// Takes the only permit of <paramref name="limiter"/> (limit 1, queue 1 or more), queues a request and checks that it
    /// is served exactly <paramref name="wait"/> later: also when that is longer than a timer can be set for (about 49.7 days).
    /// </summary>
    protected static async Task AssertWaiterServedAfter(ReplenishingRateLimiter limiter, FakeTimeProvider time, TimeSpan wait)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        ArgumentNullException.ThrowIfNull(time);
        Assert.True(wait.Ticks % TimeSpan.TicksPerMillisecond == 0, "Timers count milliseconds: the wait must be whole ones.");
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);

        // Whole milliseconds first: the fake runs timer callbacks at the time Advance moves to, and a wakeup that has to
        // re-arm from there can only be exact if that time is a whole millisecond before the permit returns.
        time.Advance(wait - TimeSpan.FromMilliseconds(1));
        time.Advance(TimeSpan.FromMilliseconds(1) - TimeSpan.FromTicks(1));
        Assert.False(waiter.IsCompleted);
        time.Advance(TimeSpan.FromTicks(1));

        Assert.True((await Completed(waiter)).IsAcquired);
    }

    /// <summary>Starts a request that must wait.</summary>
    protected static Task<RateLimitLease> Enqueue(RateLimiter limiter, int permits, CancellationToken token = default)
    {
        Task<RateLimitLease> wait = limiter.AcquireAsync(permits, token).AsTask();
        Assert.False(wait.IsCompleted, $"AcquireAsync({permits}) should have waited.");
        return wait;
    }

    /// <summary>The lease of a request that the last call must already have completed.</summary>
    protected static async Task<RateLimitLease> Completed(Task<RateLimitLease> wait)
    {
        Assert.True(wait.IsCompleted, "The request should have been completed by now.");
        return await wait.WaitAsync(GuardTimeout);
    }

    /// <summary>The <c>RETRY_AFTER</c> of a lease that must have failed.</summary>
    protected static TimeSpan RetryAfterOf(RateLimitLease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        return retryAfter;
    }

    /// <summary>Takes one permit at a time until the limiter refuses one; returns how many it admitted.</summary>
    protected static int AdmitOneAtATime(RateLimiter limiter)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        int admitted = 0;
        while (limiter.AttemptAcquire(1) is { IsAcquired: true })
        {
            admitted++;
        }

        return admitted;
    }

    /// <summary>Calls AcquireAsync for its synchronous exceptions.</summary>
    protected static void StartAcquire(RateLimiter limiter, int permits) => _ = limiter.AcquireAsync(permits).AsTask();

    private static void AssertStatistics(RateLimiter limiter, long available, long queued, long successful, long failed)
    {
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(
            (available, queued, successful, failed),
            (stats.CurrentAvailablePermits, stats.CurrentQueuedCount, stats.TotalSuccessfulLeases, stats.TotalFailedLeases));
    }
}
