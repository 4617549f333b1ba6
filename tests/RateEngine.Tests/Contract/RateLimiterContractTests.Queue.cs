using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

public abstract partial class RateLimiterContractTests
{
    // ---------------------------------------------------------------------------------------------------------------
    // Queue order

    [Fact]
    public async Task AcquireAsync_OldestFirst_ServesOldestWaiterFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> oldest = Enqueue(limiter, 1);
        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Replenish(limiter, time);

        Assert.True((await Completed(oldest)).IsAcquired);
        Assert.False(newest.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_NewestFirst_ServesNewestWaiterFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> oldest = Enqueue(limiter, 1);
        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(oldest.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(oldest)).IsAcquired);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Queue overflow

    [Fact]
    public async Task AcquireAsync_QueueFullOldestFirst_FailsNewRequestAndKeepsWaiters()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);

        Task<RateLimitLease> overflow = limiter.AcquireAsync(1).AsTask();

        Assert.True(overflow.IsCompletedSuccessfully);
        Assert.False((await overflow).IsAcquired);
        Assert.False(first.IsCompleted);
        Assert.False(second.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(2, stats.CurrentQueuedCount);
        Assert.Equal(1, stats.TotalFailedLeases);

        Replenish(limiter, time);

        Assert.True((await Completed(first)).IsAcquired);
        Assert.True((await Completed(second)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_QueueFullNewestFirst_EvictsOldestWaiterWithFailedLease()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> oldest = Enqueue(limiter, 1);
        Task<RateLimitLease> middle = Enqueue(limiter, 1);

        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Assert.False((await Completed(oldest)).IsAcquired);
        Assert.False(middle.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(2, stats.CurrentQueuedCount);
        Assert.Equal(1, stats.TotalFailedLeases);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(middle.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(middle)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_QueueFullNewestFirst_EvictsAsManyOldestWaitersAsNeeded()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 3, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);
        Task<RateLimitLease> third = Enqueue(limiter, 1);

        Task<RateLimitLease> large = Enqueue(limiter, 2);

        Assert.False((await Completed(first)).IsAcquired);
        Assert.False((await Completed(second)).IsAcquired);
        Assert.False(third.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(3, stats.CurrentQueuedCount);
        Assert.Equal(2, stats.TotalFailedLeases);

        Replenish(limiter, time);

        Assert.True((await Completed(large)).IsAcquired);
        Assert.False(third.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(third)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_NewestFirstRequestLargerThanQueueLimit_FailsWithoutEvicting()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 1, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);

        Task<RateLimitLease> tooLarge = limiter.AcquireAsync(2).AsTask();

        Assert.True(tooLarge.IsCompletedSuccessfully);
        Assert.False((await tooLarge).IsAcquired);
        Assert.False(waiter.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(1, stats.CurrentQueuedCount);
        Assert.Equal(1, stats.TotalFailedLeases);
    }

    [Fact]
    public async Task AcquireAsync_QueueFullThenReplenished_AcceptsWaitersAgain()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired);

        Replenish(limiter, time);
        Assert.True((await Completed(first)).IsAcquired);

        Task<RateLimitLease> second = Enqueue(limiter, 1);
        Replenish(limiter, time);

        Assert.True((await Completed(second)).IsAcquired);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Requests that arrive while others wait

    [Fact]
    public void AttemptAcquire_WhileWaitersQueuedOldestFirst_FailsEvenWithAvailablePermits()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        _ = Enqueue(limiter, 3);

        using RateLimitLease lease = limiter.AttemptAcquire(1);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.False(string.IsNullOrWhiteSpace(reason));
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_WhileWaitersQueuedNewestFirst_TakesAvailablePermits()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 3);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.False(waiter.IsCompleted);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_WhileWaitersQueuedOldestFirst_QueuesBehindThem()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> head = Enqueue(limiter, 3);

        Task<RateLimitLease> behind = Enqueue(limiter, 1);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);

        Replenish(limiter, time);

        Assert.True((await Completed(head)).IsAcquired);
        Assert.True((await Completed(behind)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_WhileWaitersQueuedNewestFirst_SucceedsImmediately()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> head = Enqueue(limiter, 3);

        Task<RateLimitLease> newcomer = limiter.AcquireAsync(1).AsTask();

        Assert.True(newcomer.IsCompletedSuccessfully);
        Assert.True((await newcomer).IsAcquired);
        Assert.False(head.IsCompleted);
        Assert.Equal(3, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Queue servicing

    [Fact]
    public async Task Replenish_OldestWaiterDoesNotFit_StopsServingOldestFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 5, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 2);
        Task<RateLimitLease> blocked = Enqueue(limiter, 2);
        Task<RateLimitLease> small = Enqueue(limiter, 1);

        Replenish(limiter, time);

        Assert.True((await Completed(first)).IsAcquired);
        Assert.False(blocked.IsCompleted);
        Assert.False(small.IsCompleted); // it would fit, but it is behind a waiter that does not
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(1, stats.CurrentAvailablePermits);
        Assert.Equal(3, stats.CurrentQueuedCount);
    }

    [Fact]
    public async Task Replenish_NewestWaiterDoesNotFit_StopsServingNewestFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 5, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> small = Enqueue(limiter, 1);
        Task<RateLimitLease> blocked = Enqueue(limiter, 2);
        Task<RateLimitLease> newest = Enqueue(limiter, 2);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(blocked.IsCompleted);
        Assert.False(small.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(1, stats.CurrentAvailablePermits);
        Assert.Equal(3, stats.CurrentQueuedCount);
    }

    [Fact]
    public async Task Replenish_SeveralWaitersFit_ServesThemAllAtOnce()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 3, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> one = Enqueue(limiter, 1);
        Task<RateLimitLease> two = Enqueue(limiter, 2);

        Replenish(limiter, time);

        Assert.True((await Completed(one)).IsAcquired);
        Assert.True((await Completed(two)).IsAcquired);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(0, stats.CurrentQueuedCount);
        Assert.Equal(0, stats.CurrentAvailablePermits);
        Assert.Equal(3, stats.TotalSuccessfulLeases);
    }
}
