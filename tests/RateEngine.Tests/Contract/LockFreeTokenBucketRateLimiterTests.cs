using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeTokenBucketRateLimiter"/> with automatic replenishment, plus the in-box options
/// rules and continuous refill. The factory refills the whole bucket once per <see cref="RateLimiterContractTests.Window"/>.
/// </summary>
public sealed class LockFreeTokenBucketRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override string OverLimitParamName => "tokenCount";

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new LockFreeTokenBucketRateLimiter(Options(permitLimit, permitLimit, Window, queueLimit, order, autoReplenishment: true), time);

    // One period refills the bucket when the rate is exact; a rate that is not is rounded down by less than one part in a
    // million, so two periods always suffice.
    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window * 2);

    // Tokens accrue continuously: permits * (Window / permitLimit) after the bucket was drained.
    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) =>
        TimeForTokens(permitLimit, permits, elapsed);

    internal static TimeSpan TimeForTokens(int permitLimit, int permits, TimeSpan elapsed)
    {
        TimeSpan needed = TimeSpan.FromTicks(Window.Ticks * permits / permitLimit) - elapsed;
        return needed > TimeSpan.Zero ? needed : TimeSpan.Zero;
    }

    [Fact]
    public async Task AcquireAsync_QueuedPlusRequestedBeyondTheLimit_RetryAfterIsTheInBoxOne()
    {
        // Two tokens, one per 20 s: take both, queue one, then ask for two. The queued one is served at 20 s, these two
        // are there at 60 s. (Clamping queued + requested to the limit said 40 s, which a client would obey in vain.)
        var options = new TokenBucketRateLimiterOptions
        {
            TokenLimit = 2, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromSeconds(20), QueueLimit = 1, AutoReplenishment = false,
        };
        var time = new FakeTimeProvider();
        using var ours = new LockFreeTokenBucketRateLimiter(options, time);
        using var inBox = new TokenBucketRateLimiter(options);
        foreach (RateLimiter limiter in new RateLimiter[] { ours, inBox })
        {
            Assert.True(limiter.AttemptAcquire(2).IsAcquired);
            _ = limiter.AcquireAsync(1);
            using RateLimitLease rejected = await limiter.AcquireAsync(2);
            Assert.False(rejected.IsAcquired);
            Assert.True(rejected.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
            Assert.Equal(TimeSpan.FromSeconds(60), retryAfter);
        }
    }

    [Fact]
    public async Task AcquireAsync_IntMaxValueTokensPerMillisecond_QueuedFullBucketIsServedAfterOnePeriod()
    {
        var time = new FakeTimeProvider();
        using var limiter = new LockFreeTokenBucketRateLimiter(
            Options(int.MaxValue, int.MaxValue, TimeSpan.FromMilliseconds(1), int.MaxValue, QueueProcessingOrder.OldestFirst, autoReplenishment: true),
            time);
        Assert.True(limiter.AttemptAcquire(int.MaxValue).IsAcquired);
        Task<RateLimitLease> waiter = limiter.AcquireAsync(int.MaxValue).AsTask();
        Assert.False(waiter.IsCompleted);

        time.Advance(TimeSpan.FromMilliseconds(1));

        Assert.True(waiter.IsCompleted);
        Assert.True((await waiter).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_ThousandTokensAtOnePerThirtyDays_TakesTheWholeBucket()
    {
        // The bucket takes 82 years to fill, which no 64-bit count of nanoseconds since creation can hold with room to spare.
        using var limiter = new LockFreeTokenBucketRateLimiter(
            Options(1_000, 1, TimeSpan.FromDays(30), 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true));
        Assert.True(limiter.AttemptAcquire(1_000).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void Ctor_MoreTokensPerPeriodThanTheLimit_IsAcceptedAndCapped()
    {
        var time = new FakeTimeProvider();
        using var limiter = new LockFreeTokenBucketRateLimiter(
            Options(2, 10, TimeSpan.FromSeconds(1), 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true), time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        time.Advance(TimeSpan.FromSeconds(1));

        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task Ctor_OptionsChangedAfterwards_HaveNoEffect()
    {
        var time = new FakeTimeProvider();
        var options = Options(1, 1, Window, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true);
        using var limiter = new LockFreeTokenBucketRateLimiter(options, time);

        options.TokenLimit = 5;
        options.TokensPerPeriod = 5;
        options.ReplenishmentPeriod = TimeSpan.FromSeconds(1);
        options.QueueLimit = 5;
        options.AutoReplenishment = false;

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired);
        Assert.True(limiter.IsAutoReplenishing);
        Assert.Equal(Window, limiter.ReplenishmentPeriod);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_TokensAccrueContinuously()
    {
        var time = new FakeTimeProvider();
        using var limiter = new LockFreeTokenBucketRateLimiter(
            Options(4, 2, TimeSpan.FromSeconds(1), 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true), time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);

        time.Advance(TimeSpan.FromMilliseconds(500) - TimeSpan.FromTicks(1));
        Assert.Equal(TimeSpan.FromTicks(1), RetryAfterOf(limiter.AttemptAcquire(1)));
        time.Advance(TimeSpan.FromTicks(1)); // one token every 500 ms
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        time.Advance(TimeSpan.FromSeconds(1)); // two more, not a whole period's batch at a boundary
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
        time.Advance(TimeSpan.FromSeconds(10)); // never more than the limit
        Assert.Equal(4, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_ZeroTokensWithOnlyAFractionOfAToken_Fails()
    {
        var time = new FakeTimeProvider();
        using var limiter = new LockFreeTokenBucketRateLimiter(
            Options(4, 2, TimeSpan.FromSeconds(1), 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true), time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);

        time.Advance(TimeSpan.FromMilliseconds(250)); // half a token
        Assert.False(limiter.AttemptAcquire(0).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);

        time.Advance(TimeSpan.FromMilliseconds(250));
        Assert.True(limiter.AttemptAcquire(0).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_Waiter_IsServedTheTickItsTokensAccrue()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, QueueProcessingOrder.OldestFirst, time);

        await AssertWaiterServedAfter(limiter, time, Window);
    }

    [Fact]
    public async Task AcquireAsync_WaitLongerThanATimerCanBeSet_IsServed()
    {
        var time = new FakeTimeProvider();
        TimeSpan period = TimeSpan.FromDays(60);
        using var limiter = new LockFreeTokenBucketRateLimiter(Options(1, 1, period, 1, QueueProcessingOrder.OldestFirst, true), time);

        await AssertWaiterServedAfter(limiter, time, period);
    }

    internal static TokenBucketRateLimiterOptions Options(
        int tokenLimit, int tokensPerPeriod, TimeSpan period, int queueLimit, QueueProcessingOrder order, bool autoReplenishment) => new()
    {
        TokenLimit = tokenLimit,
        TokensPerPeriod = tokensPerPeriod,
        ReplenishmentPeriod = period,
        QueueLimit = queueLimit,
        QueueProcessingOrder = order,
        AutoReplenishment = autoReplenishment,
    };
}
