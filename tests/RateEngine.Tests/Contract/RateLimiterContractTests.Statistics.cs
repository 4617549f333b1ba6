using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Contract;

public abstract partial class RateLimiterContractTests
{
    // ---------------------------------------------------------------------------------------------------------------
    // Statistics

    [Fact]
    public void GetStatistics_EachCall_ReturnsNewInstance()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);

        RateLimiterStatistics first = limiter.GetStatistics()!;
        RateLimiterStatistics second = limiter.GetStatistics()!;

        Assert.NotSame(first, second);
        Assert.Equal(2, first.CurrentAvailablePermits);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(2, first.CurrentAvailablePermits); // a snapshot, not a live view
    }

    [Fact]
    public async Task GetStatistics_AfterActivity_CountsPermitsWaitersAndLeases()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 2, OldestFirst, time);
        AssertStatistics(limiter, available: 3, queued: 0, successful: 0, failed: 0);

        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        AssertStatistics(limiter, available: 0, queued: 0, successful: 2, failed: 1);

        Task<RateLimitLease> waiter = Enqueue(limiter, 2);
        Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired); // queue full
        AssertStatistics(limiter, available: 0, queued: 2, successful: 2, failed: 2);

        Replenish(limiter, time);

        Assert.True((await Completed(waiter)).IsAcquired);
        AssertStatistics(limiter, available: 1, queued: 0, successful: 3, failed: 2);
    }

    [Fact]
    public async Task GetStatistics_ZeroPermitRequests_AreCounted()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);

        Assert.True(limiter.AttemptAcquire(0).IsAcquired);
        Assert.True((await limiter.AcquireAsync(0).AsTask().WaitAsync(GuardTimeout)).IsAcquired);
        AssertStatistics(limiter, available: 1, queued: 0, successful: 2, failed: 0);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(0).IsAcquired);
        Task<RateLimitLease> probe = Enqueue(limiter, 0);
        AssertStatistics(limiter, available: 0, queued: 0, successful: 3, failed: 1);

        Replenish(limiter, time);

        Assert.True((await Completed(probe)).IsAcquired);
        AssertStatistics(limiter, available: 1, queued: 0, successful: 4, failed: 1);
    }

    [Fact]
    public void GetStatistics_AfterDispose_Throws()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);
        Assert.NotNull(limiter.GetStatistics());

        limiter.Dispose();

        Assert.Throws<ObjectDisposedException>(() => limiter.GetStatistics());
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Leases and allocations

    [Fact]
    public async Task SuccessfulLeases_AreOneCachedInstance()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 1, OldestFirst, time);

        RateLimitLease first = limiter.AttemptAcquire(1);
        first.Dispose(); // disposing a lease of a rate limiter gives nothing back and must not spoil the cached instance
        RateLimitLease second = limiter.AttemptAcquire(1);
        RateLimitLease probe = limiter.AttemptAcquire(0);
        RateLimitLease acquired = await limiter.AcquireAsync(2).AsTask().WaitAsync(GuardTimeout);

        Assert.True(second.IsAcquired);
        Assert.Same(first, second);
        Assert.Same(first, probe);
        Assert.Same(first, acquired);
    }

    [Fact]
    public void AttemptAcquire_Success_AllocatesNothing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(100_000, 0, OldestFirst, time); // room for five measured runs
        for (int i = 0; i < 500; i++)
        {
            limiter.AttemptAcquire(1); // warm up every path the measured loop takes
        }

        bool allAcquired = true;
        long allocated = Allocation.LeastOnThisThread(() =>
        {
            for (int i = 0; i < 5_000; i++)
            {
                allAcquired &= limiter.AttemptAcquire(1).IsAcquired;
            }
        });

        Assert.True(allAcquired);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public async Task AcquireAsync_SuccessWithQueueingOn_AllocatesNothing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(100_000, 10, OldestFirst, time); // room for five measured runs
        for (int i = 0; i < 500; i++)
        {
            (await limiter.AcquireAsync(1)).Dispose(); // warm up every path the measured loop takes
        }

        bool allSynchronous = true;
        bool allAcquired = true;
        long allocated = Allocation.LeastOnThisThread(() =>
        {
            for (int i = 0; i < 5_000; i++)
            {
                ValueTask<RateLimitLease> pending = limiter.AcquireAsync(1);
                allSynchronous &= pending.IsCompletedSuccessfully;
                allAcquired &= allSynchronous && pending.Result.IsAcquired; // completed: Result does not block
            }
        });

        Assert.True(allSynchronous);
        Assert.True(allAcquired);
        Assert.Equal(0, allocated);
    }
}
