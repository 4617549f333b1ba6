using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

public abstract partial class RateLimiterContractTests
{
    // ---------------------------------------------------------------------------------------------------------------
    // Time

    [Theory]
    [InlineData(3)] // hours
    [InlineData(24 * 400)] // more than 2^20 windows of 10 s: beyond the range an epoch can be read as ahead
    public void AttemptAcquire_ClockSteppedBackAnyAmount_ReadsAsNoTimePassed(int hours)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 0, OldestFirst, time);
        time.Advance(TimeSpan.FromHours(hours) + Window); // a limiter that has run for longer than the step
        Replenish(limiter, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        time.Advance(ShortWhile);
        long available = limiter.GetStatistics()!.CurrentAvailablePermits;

        time.AdjustTime(time.GetUtcNow() - TimeSpan.FromHours(hours));

        Assert.Equal(available, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.False(limiter.AttemptAcquire((int)available + 1).IsAcquired);
        Assert.True(limiter.AttemptAcquire((int)available).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Null(limiter.IdleDuration);
        if (ExpectedAutoReplenishing)
        {
            // The clock is still behind the time the limiter has seen: a window of it brings nothing back.
            time.Advance(Window);
            Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        }
    }

    [Theory]
    [InlineData(10)]
    [InlineData(120)] // to before the limiter was made: the catch-up counted only back to then, short by an hour
    public void RetryAfter_AfterTheClockSteppedBack_IsLongEnoughToPass(int minutesBack)
    {
        // The limiter's time stands still until the provider catches up with it: a RETRY_AFTER that counted from the limiter's
        // time alone was short by the step, and a retry at that moment was refused again.
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);
        time.Advance(TimeSpan.FromHours(1));
        Replenish(limiter, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.AdjustTime(time.GetUtcNow() - TimeSpan.FromMinutes(minutesBack));

        using RateLimitLease refused = limiter.AttemptAcquire(1);
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));

        // At RETRY_AFTER, not a refill later: a manual limiter replenished as its timer would, up to a millisecond late,
        // which no RETRY_AFTER can know of. (A manually replenished bucket may say less than the step: the hour it was not
        // credited while full counts.)
        AdvanceReplenishing(limiter, time, retryAfter + (ExpectedAutoReplenishing ? TimeSpan.Zero : TimeSpan.FromMilliseconds(1)));
        using RateLimitLease retried = limiter.AttemptAcquire(1);
        if (!retried.IsAcquired)
        {
            Assert.Fail($"refused again at RETRY_AFTER ({retryAfter}), then told {RetryAfterOf(retried)} more");
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Idle duration

    [Fact]
    public void IdleDuration_NewLimiter_IsIdleSinceCreation()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.Equal(TimeSpan.Zero, limiter.IdleDuration);

        time.Advance(TimeSpan.FromSeconds(3));

        Assert.Equal(TimeSpan.FromSeconds(3), limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_WhilePermitHeld_IsNull()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.Null(limiter.IdleDuration);
        time.Advance(ShortWhile);
        Assert.Null(limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_ZeroPermitAcquire_KeepsLimiterIdle()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        time.Advance(ShortWhile);

        Assert.True(limiter.AttemptAcquire(0).IsAcquired);

        Assert.Equal(ShortWhile, limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_AfterPermitsReturn_GrowsWhileIdle()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        Replenish(limiter, time);
        TimeSpan? idle = limiter.IdleDuration;
        Assert.NotNull(idle);
        time.Advance(TimeSpan.FromSeconds(2));

        Assert.Equal(idle + TimeSpan.FromSeconds(2), limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_WhileRequestsQueued_IsNull()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 0);

        Assert.Null(limiter.IdleDuration);

        Replenish(limiter, time);
        Assert.True(waiter.IsCompletedSuccessfully);
        Assert.NotNull(limiter.IdleDuration);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Replenishment

    [Fact]
    public void AttemptAcquire_RefillDueButNotYetReplenished_RetryAfterIsPositive()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(FullRefill);

        using RateLimitLease lease = limiter.AttemptAcquire(1);

        if (ExpectedAutoReplenishing)
        {
            Assert.True(lease.IsAcquired);
            return;
        }

        // Manual: the refill is due, but only the application's next TryReplenish brings it. A RETRY_AFTER of zero sent
        // clients straight back into refusals.
        Assert.False(lease.IsAcquired);
        Assert.True(RetryAfterOf(lease) > TimeSpan.Zero);
    }

    [Fact]
    public void AdvancingTime_WithoutTryReplenish_ReturnsPermitsOnlyWhenAutomatic()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        time.Advance(Window * 3);

        Assert.Equal(ExpectedAutoReplenishing ? 2 : 0, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.Equal(ExpectedAutoReplenishing, limiter.AttemptAcquire(1).IsAcquired);
    }
}
