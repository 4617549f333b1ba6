using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>The contract for <see cref="SlidingWindowLogRateLimiter"/>, plus its options and its exact window.</summary>
public sealed class SlidingWindowLogRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    // The log keeps one entry per permit (at most 2^24); 2^16 still fills an int.MaxValue queue with 32,768 waiters.
    protected override int LargePermitLimit => 1 << 16;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new SlidingWindowLogRateLimiter(Options(permitLimit, Window, queueLimit, order), time);

    // Every permit comes back exactly one window after it was taken.
    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window);

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window - elapsed;

    [Fact]
    public async Task Ctor_OptionsChangedAfterwards_HaveNoEffect()
    {
        var time = new FakeTimeProvider();
        var options = Options(1, Window, 0, QueueProcessingOrder.OldestFirst);
        using var limiter = new SlidingWindowLogRateLimiter(options, time);

        options.PermitLimit = 5;
        options.Window = TimeSpan.FromSeconds(1);
        options.QueueLimit = 5;

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired); // still no queue
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(Window, limiter.ReplenishmentPeriod);
    }

    [Fact]
    public void AttemptAcquire_EachPermit_ReturnsExactlyOneWindowAfterItWasTaken()
    {
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(Options(2, Window, 0, QueueProcessingOrder.OldestFirst), time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired); // at 0 s
        time.Advance(TimeSpan.FromSeconds(3));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired); // at 3 s

        time.Advance(TimeSpan.FromSeconds(2)); // 5 s: the first returns in 5 s, both in 8 s
        Assert.Equal(TimeSpan.FromSeconds(5), RetryAfterOf(limiter.AttemptAcquire(1)));
        Assert.Equal(TimeSpan.FromSeconds(8), RetryAfterOf(limiter.AttemptAcquire(2)));

        time.Advance(TimeSpan.FromSeconds(5) - TimeSpan.FromTicks(1));
        Assert.Equal(TimeSpan.FromTicks(1), RetryAfterOf(limiter.AttemptAcquire(1)));
        time.Advance(TimeSpan.FromTicks(1)); // 10 s
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);

        time.Advance(TimeSpan.FromSeconds(3)); // 13 s: the permit taken at 3 s is back
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_Waiter_IsServedTheTickItsPermitReturns()
    {
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(Options(1, Window, 1, QueueProcessingOrder.OldestFirst), time);

        await AssertWaiterServedAfter(limiter, time, Window);
    }

    [Fact]
    public async Task AcquireAsync_WaitLongerThanATimerCanBeSet_IsServed()
    {
        var time = new FakeTimeProvider();
        TimeSpan window = TimeSpan.FromDays(60);
        using var limiter = new SlidingWindowLogRateLimiter(Options(1, window, 1, QueueProcessingOrder.OldestFirst), time);

        await AssertWaiterServedAfter(limiter, time, window);
    }

    internal static SlidingWindowLogRateLimiterOptions Options(
        int permitLimit, TimeSpan window, int queueLimit, QueueProcessingOrder order) => new()
    {
        PermitLimit = permitLimit,
        Window = window,
        QueueLimit = queueLimit,
        QueueProcessingOrder = order,
    };

    [Fact]
    public async Task AcquireAsync_PermitFreedWhileTheCallerWaitedForTheQueueLock_IsAdmittedAtOnce()
    {
        // The caller's first clock read is older than the moment it holds the queue's lock (here the clock moves 600 ms
        // right after that read, as a long queue served under the lock would make it): the permit is free by then, and a
        // request decided on the old read would sit in the queue until a wakeup armed from that read too.
        var time = new SteppingTime();
        using var limiter = new SlidingWindowLogRateLimiter(Options(1, TimeSpan.FromSeconds(10), 1, QueueProcessingOrder.OldestFirst), time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Inner.Advance(TimeSpan.FromMilliseconds(9_900));

        time.AfterNextRead = () => time.Inner.Advance(TimeSpan.FromMilliseconds(600));
        ValueTask<RateLimitLease> waiting = limiter.AcquireAsync(1);

        Assert.True(waiting.IsCompleted);
        Assert.True((await waiting).IsAcquired);
    }

    /// <summary>A fake clock that can move right after one chosen read (a thread that stalls between its read and its lock).</summary>
    private sealed class SteppingTime : TimeProvider
    {
        public FakeTimeProvider Inner { get; } = new();

        public Action? AfterNextRead { get; set; }

        public override long TimestampFrequency => Inner.TimestampFrequency;

        public override DateTimeOffset GetUtcNow() => Inner.GetUtcNow();

        public override long GetTimestamp()
        {
            long read = Inner.GetTimestamp();
            Action? after = AfterNextRead;
            AfterNextRead = null;
            after?.Invoke();
            return read;
        }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
            Inner.CreateTimer(callback, state, dueTime, period);
    }
}
