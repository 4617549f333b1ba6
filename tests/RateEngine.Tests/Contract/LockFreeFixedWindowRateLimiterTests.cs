using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeFixedWindowRateLimiter"/> with automatic replenishment, plus the in-box options
/// rules and windows aligned to the limiter's creation.
/// </summary>
public sealed class LockFreeFixedWindowRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new LockFreeFixedWindowRateLimiter(Options(permitLimit, Window, queueLimit, order, autoReplenishment: true), time);

    // From any time, one window later is in a later window, where every permit is free.
    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window);

    // The time left until the next window starts, whatever the request.
    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window - elapsed;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Acquire_QueueDueButItsTimerLate_ServesTheQueueThenDecidesThisRequest(bool async)
    {
        // The queue's wakeup is due but its timer fires late: a request must not be refused behind a queue whose permits are
        // free (AcquireAsync, with the queue full, was refused as "queue full" with a RETRY_AFTER of zero).
        var time = new LateTimers(TimeSpan.FromSeconds(1));
        using ReplenishingRateLimiter limiter = Create(4, 2, QueueProcessingOrder.OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);
        Task<RateLimitLease> queued = limiter.AcquireAsync(2).AsTask();

        time.Advance(Window + TimeSpan.FromMilliseconds(1)); // the next window has begun; the wakeup fires a second late

        using RateLimitLease lease = async ? await limiter.AcquireAsync(1) : limiter.AttemptAcquire(1);
        Assert.True(lease.IsAcquired, "refused behind a queue whose permits were free");
        Assert.True(queued.IsCompletedSuccessfully);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
        using RateLimitLease served = await queued;
        Assert.True(served.IsAcquired);
    }

    [Fact]
    public async Task Ctor_OptionsChangedAfterwards_HaveNoEffect()
    {
        var time = new FakeTimeProvider();
        var options = Options(1, Window, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true);
        using var limiter = new LockFreeFixedWindowRateLimiter(options, time);

        options.PermitLimit = 5;
        options.Window = TimeSpan.FromSeconds(1);
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
    public void AttemptAcquire_WindowsAreAlignedToCreation()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, QueueProcessingOrder.OldestFirst, time);
        time.Advance(TimeSpan.FromSeconds(9));
        Assert.True(limiter.AttemptAcquire(2).IsAcquired); // late in window [0 s, 10 s)

        Assert.Equal(TimeSpan.FromSeconds(1), RetryAfterOf(limiter.AttemptAcquire(1)));
        time.Advance(TimeSpan.FromSeconds(1) - TimeSpan.FromTicks(1));
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromTicks(1)); // 10 s: a new window, everything is back

        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Assert.Equal(Window, RetryAfterOf(limiter.AttemptAcquire(1)));
    }

    [Fact]
    public async Task AcquireAsync_Waiter_IsServedWhenTheNextWindowStarts()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, QueueProcessingOrder.OldestFirst, time);

        await AssertWaiterServedAfter(limiter, time, Window);
    }

    [Fact]
    public async Task AcquireAsync_WaitLongerThanATimerCanBeSet_IsServed()
    {
        var time = new FakeTimeProvider();
        TimeSpan window = TimeSpan.FromDays(60);
        using var limiter = new LockFreeFixedWindowRateLimiter(Options(1, window, 1, QueueProcessingOrder.OldestFirst, true), time);

        await AssertWaiterServedAfter(limiter, time, window);
    }

    internal static FixedWindowRateLimiterOptions Options(
        int permitLimit, TimeSpan window, int queueLimit, QueueProcessingOrder order, bool autoReplenishment) => new()
    {
        PermitLimit = permitLimit,
        Window = window,
        QueueLimit = queueLimit,
        QueueProcessingOrder = order,
        AutoReplenishment = autoReplenishment,
    };

    /// <summary>A fake clock whose timers fire <paramref name="lateness"/> after they are due, as a busy machine's do.</summary>
    private sealed class LateTimers(TimeSpan lateness) : FakeTimeProvider
    {
        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
            new Late(base.CreateTimer(callback, state, Delay(dueTime), period), lateness);

        private TimeSpan Delay(TimeSpan due) => due == Timeout.InfiniteTimeSpan ? due : due + lateness;

        private sealed class Late(ITimer inner, TimeSpan lateness) : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) =>
                inner.Change(dueTime == Timeout.InfiniteTimeSpan ? dueTime : dueTime + lateness, period);

            public void Dispose() => inner.Dispose();

            public ValueTask DisposeAsync() => inner.DisposeAsync();
        }
    }
}
