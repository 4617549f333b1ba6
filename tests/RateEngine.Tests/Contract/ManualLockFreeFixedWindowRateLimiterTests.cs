using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeFixedWindowRateLimiter"/> with <c>AutoReplenishment = false</c>: a window starts
/// only in <c>TryReplenish</c>, and only once a window's length of time has passed since the last start.
/// </summary>
public sealed class ManualLockFreeFixedWindowRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => false;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new LockFreeFixedWindowRateLimiter(
            LockFreeFixedWindowRateLimiterTests.Options(permitLimit, Window, queueLimit, order, autoReplenishment: false), time);

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time)
    {
        time.Advance(Window);
        Assert.True(limiter.TryReplenish());
    }

    // The next window may start one window after the last start (here: creation).
    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window - elapsed;

    [Fact]
    public void TryReplenish_BeforeAFullWindow_DoesNothing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        time.Advance(Window - TimeSpan.FromTicks(1));
        Assert.True(limiter.TryReplenish());
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);

        time.Advance(TimeSpan.FromTicks(1));
        Assert.True(limiter.TryReplenish());
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void TryReplenish_WhileFull_StillStartsANewWindow()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, QueueProcessingOrder.OldestFirst, time);
        time.Advance(Window);
        Assert.True(limiter.TryReplenish()); // nothing to give back, but the window restarts now (the in-box rule)

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(Window - TimeSpan.FromTicks(1));
        Assert.True(limiter.TryReplenish());

        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void TryReplenish_LongAfterTheWindow_RefillsAndRestartsTheWindow()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        time.Advance(Window * 5);

        Assert.True(limiter.TryReplenish());

        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Assert.Equal(Window, RetryAfterOf(limiter.AttemptAcquire(1)));
    }
}
