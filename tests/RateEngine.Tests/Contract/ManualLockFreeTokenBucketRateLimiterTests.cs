using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeTokenBucketRateLimiter"/> with <c>AutoReplenishment = false</c>: each
/// <c>TryReplenish</c> credits the provider time elapsed since the last credit, and nothing while the bucket is full.
/// </summary>
public class ManualLockFreeTokenBucketRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => false;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override string OverLimitParamName => "tokenCount";

    /// <summary>The per-core blocks of the derived contract run; none here.</summary>
    protected virtual PerCoreReservationOptions? PerCore => null;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time)
    {
        return Bucket(LockFreeTokenBucketRateLimiterTests.Options(permitLimit, permitLimit, Window, queueLimit, order, autoReplenishment: false), time);
    }

    private LockFreeTokenBucketRateLimiter Bucket(TokenBucketRateLimiterOptions options, TimeProvider time) =>
        PerCore is { } perCore ? new LockFreeTokenBucketRateLimiter(options, perCore, time) : new LockFreeTokenBucketRateLimiter(options, time);

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time)
    {
        time.Advance(Window * 2);
        Assert.True(limiter.TryReplenish());
    }

    // The time elapsed since the last credit is credited by the next TryReplenish, so it counts as waited already.
    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) =>
        LockFreeTokenBucketRateLimiterTests.TimeForTokens(permitLimit, permits, elapsed);

    [Fact]
    public void TryReplenish_CreditsTheTimeElapsedSinceTheLastCredit()
    {
        var time = new FakeTimeProvider();
        using LockFreeTokenBucketRateLimiter limiter = Bucket(
            LockFreeTokenBucketRateLimiterTests.Options(4, 2, TimeSpan.FromSeconds(1), 0, QueueProcessingOrder.OldestFirst, false), time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);

        time.Advance(TimeSpan.FromMilliseconds(250));
        Assert.True(limiter.TryReplenish()); // half a token: not enough for anything
        Assert.False(limiter.AttemptAcquire(0).IsAcquired);
        time.Advance(TimeSpan.FromMilliseconds(250));
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits); // time alone credits nothing
        Assert.True(limiter.TryReplenish()); // the other half

        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(limiter.TryReplenish());
        Assert.Equal(3, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void TryReplenish_ClockStepsBackThenForward_CreditsNoTimeThatDidNotPass()
    {
        // A provider stepped back (a wall clock corrected by NTP) and then forward again: no net time has passed, so no
        // token may come back. Crediting the forward step after recording the step back would admit a second burst.
        var time = new FakeTimeProvider();
        using LockFreeTokenBucketRateLimiter limiter = Bucket(
            LockFreeTokenBucketRateLimiterTests.Options(10, 10, TimeSpan.FromSeconds(10), 0, QueueProcessingOrder.OldestFirst, false), time);
        Assert.True(limiter.AttemptAcquire(10).IsAcquired);

        time.AdjustTime(time.GetUtcNow() - TimeSpan.FromSeconds(10));
        Assert.True(limiter.TryReplenish());
        time.Advance(TimeSpan.FromSeconds(10));
        Assert.True(limiter.TryReplenish());

        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(limiter.TryReplenish());
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits); // time that did pass is credited
    }

    [Fact]
    public void TryReplenish_AfterTimeSpentFull_CreditsThatTimeOnceDrawn()
    {
        // The in-box bucket's rule, kept for drop-in compatibility: a full bucket takes no credit, and the time is credited
        // by the first TryReplenish after tokens were taken.
        var time = new FakeTimeProvider();
        using LockFreeTokenBucketRateLimiter limiter = Bucket(
            LockFreeTokenBucketRateLimiterTests.Options(4, 4, Window, 0, QueueProcessingOrder.OldestFirst, false), time);
        time.Advance(Window / 2);
        Assert.True(limiter.TryReplenish());

        Assert.True(limiter.AttemptAcquire(4).IsAcquired);
        Assert.True(limiter.TryReplenish());

        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }
}
