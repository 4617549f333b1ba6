using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

public abstract partial class RateLimiterContractTests
{
    // ---------------------------------------------------------------------------------------------------------------
    // Cancellation

    [Fact]
    public async Task AcquireAsync_TokenAlreadyCancelled_CancelsWithoutQueueing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();

        Task<RateLimitLease> cancelled = limiter.AcquireAsync(1, cts.Token).AsTask();

        await Assert.ThrowsAsync<TaskCanceledException>(() => cancelled.WaitAsync(GuardTimeout));
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(0, stats.CurrentQueuedCount);
        Assert.Equal(0, stats.TotalFailedLeases);

        // The queue's one place is still free.
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);
        Replenish(limiter, time);
        Assert.True((await Completed(waiter)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileQueued_ThrowsWithTokenAndReleasesItsPlace()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> waiter = Enqueue(limiter, 2, cts.Token);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentQueuedCount);

        await cts.CancelAsync();

        var ex = await Assert.ThrowsAsync<TaskCanceledException>(() => waiter.WaitAsync(GuardTimeout));
        Assert.Equal(cts.Token, ex.CancellationToken);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(0, stats.CurrentQueuedCount);
        Assert.Equal(0, stats.TotalFailedLeases);

        // The cancelled waiter takes nothing when permits come back.
        Replenish(limiter, time);
        stats = limiter.GetStatistics()!;
        Assert.Equal(2, stats.CurrentAvailablePermits);
        Assert.Equal(1, stats.TotalSuccessfulLeases);
    }

    [Theory]
    [InlineData(QueueProcessingOrder.OldestFirst)]
    [InlineData(QueueProcessingOrder.NewestFirst)]
    public async Task AcquireAsync_CancelledWhileQueued_QueueSpaceCanBeRefilled(QueueProcessingOrder order)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, order, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> cancelled = Enqueue(limiter, 1, cts.Token);
        if (order == OldestFirst)
        {
            Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired); // the queue is full
        }

        await cts.CancelAsync();
        await Assert.ThrowsAsync<TaskCanceledException>(() => cancelled.WaitAsync(GuardTimeout));
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount); // its place is free: newest-first would evict otherwise
        long failed = limiter.GetStatistics()!.TotalFailedLeases;

        Task<RateLimitLease> replacement = Enqueue(limiter, 1);
        Assert.Equal(failed, limiter.GetStatistics()!.TotalFailedLeases); // queued without evicting anyone
        Replenish(limiter, time);

        Assert.True((await Completed(replacement)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileQueuedNewestFirst_NewWaiterDoesNotEvictTheOthers()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> cancelled = Enqueue(limiter, 1, cts.Token);
        Task<RateLimitLease> kept = Enqueue(limiter, 1);

        await cts.CancelAsync();
        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Assert.True(cancelled.IsCanceled);
        Assert.False(kept.IsCompleted);
        Assert.Equal(0, limiter.GetStatistics()!.TotalFailedLeases);

        Replenish(limiter, time);
        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(kept.IsCompleted);

        Replenish(limiter, time);
        Assert.True((await Completed(kept)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWaiterWasBlockingTheQueue_WaitersBehindAreServedAtTheNextWakeup()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 3, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> blocker = Enqueue(limiter, 2, cts.Token);
        Task<RateLimitLease> behind = Enqueue(limiter, 1);

        await cts.CancelAsync();

        // As in-box: the cancellation frees its queue space but serves no one itself; the next wakeup does.
        Assert.True(blocker.IsCanceled);
        Assert.False(behind.IsCompleted);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentQueuedCount);
        if (ExpectedAutoReplenishing)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
        }
        else
        {
            Replenish(limiter, time);
        }

        Assert.True((await Completed(behind)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_TokenCancelledAfterWaiterWasServed_ChangesNothing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> served = Enqueue(limiter, 1, cts.Token);
        Task<RateLimitLease> next = Enqueue(limiter, 1);
        Replenish(limiter, time);
        Assert.True((await Completed(served)).IsAcquired);

        await cts.CancelAsync();

        Assert.True(served.IsCompletedSuccessfully);
        Assert.False(next.IsCompleted);
        AssertStatistics(limiter, available: 0, queued: 1, successful: 2, failed: 0);
    }
}
