using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeFixedWindowRateLimiter"/> with per-core blocks and <c>AutoReplenishment = false</c>:
/// a manual clock moves one tick per window, so a block lives from one <c>TryReplenish</c> to the next.
/// </summary>
public sealed class ManualPerCoreLockFreeFixedWindowRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => false;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new LockFreeFixedWindowRateLimiter(
            LockFreeFixedWindowRateLimiterTests.Options(permitLimit, Window, queueLimit, order, autoReplenishment: false),
            new PerCoreReservationOptions(),
            time);

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time)
    {
        time.Advance(Window);
        Assert.True(limiter.TryReplenish());
    }

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window - elapsed;

    [Fact]
    public void TryReplenish_BlocksOfTheLastWindow_AreNotUsedInTheNext()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);
        for (int i = 0; i < 100; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        time.Advance(Window);
        Assert.True(limiter.TryReplenish());
        Assert.True(limiter.AttemptAcquire(1_000).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }
}
