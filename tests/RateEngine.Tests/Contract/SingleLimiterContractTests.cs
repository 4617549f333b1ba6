using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The part of the contract that only a limiter of its own answers: its replenishment properties and <c>TryReplenish</c>.
/// One key of a partitioned limiter has none of them (the partitioned limiter replenishes every key from the clock, and
/// its adapter in these tests would only echo the test's own expectations), so its test classes derive from
/// <see cref="RateLimiterContractTests"/> directly.
/// </summary>
public abstract class SingleLimiterContractTests : RateLimiterContractTests
{
    [Fact]
    public void ReplenishmentProperties_MatchTheOptions()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, QueueProcessingOrder.OldestFirst, time);

        Assert.Equal(ExpectedAutoReplenishing, limiter.IsAutoReplenishing);
        Assert.Equal(ExpectedReplenishmentPeriod, limiter.ReplenishmentPeriod);
    }

    [Fact]
    public void TryReplenish_ReturnsTrueOnlyWhenReplenishmentIsManual()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.Equal(!ExpectedAutoReplenishing, limiter.TryReplenish());

        // Too early for any replenishment: whatever it returned, it freed nothing.
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void Dispose_Afterwards_ReplenishmentPropertiesStillAnswer()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(2, 2, QueueProcessingOrder.OldestFirst, time);

        limiter.Dispose();

        Assert.Equal(!ExpectedAutoReplenishing, limiter.TryReplenish());
        Assert.Equal(ExpectedAutoReplenishing, limiter.IsAutoReplenishing);
        Assert.Equal(ExpectedReplenishmentPeriod, limiter.ReplenishmentPeriod);
    }
}
