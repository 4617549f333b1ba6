using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

public abstract partial class RateLimiterContractTests
{
    // ---------------------------------------------------------------------------------------------------------------
    // Argument checks and overflow

    [Fact]
    public void AttemptAcquire_NegativePermitCount_ThrowsArgumentOutOfRange()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(-1));

        Assert.Equal("permitCount", ex.ParamName);
        Assert.Equal(0, limiter.GetStatistics()!.TotalFailedLeases);
    }

    [Fact]
    public void AcquireAsync_NegativePermitCount_ThrowsSynchronously()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => StartAcquire(limiter, -1));

        Assert.Equal("permitCount", ex.ParamName);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    [Fact]
    public void AttemptAcquire_MoreThanPermitLimit_ThrowsArgumentOutOfRange()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 3, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(4));

        Assert.Equal(OverLimitParamName, ex.ParamName);
        Assert.Equal(4, ex.ActualValue);
        string unit = OverLimitParamName == "tokenCount" ? "token" : "permit"; // the in-box limiters' words
        Assert.StartsWith($"4 {unit}(s) exceeds the {unit} limit of 3.", ex.Message, StringComparison.Ordinal);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(3, stats.CurrentAvailablePermits);
        Assert.Equal(0, stats.TotalFailedLeases);
    }

    [Fact]
    public void AcquireAsync_MoreThanPermitLimit_ThrowsSynchronously()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 10, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => StartAcquire(limiter, 4));

        Assert.Equal(OverLimitParamName, ex.ParamName);
        Assert.Equal(4, ex.ActualValue);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    [Theory]
    [InlineData(QueueProcessingOrder.OldestFirst)]
    [InlineData(QueueProcessingOrder.NewestFirst)]
    public async Task AcquireAsync_IntMaxValuePermitsAndQueue_DoNotOverflow(QueueProcessingOrder order)
    {
        var time = new FakeTimeProvider();
        int limit = LargePermitLimit;
        using ReplenishingRateLimiter limiter = Create(limit, int.MaxValue, order, time);
        Assert.True(limiter.AttemptAcquire(limit).IsAcquired);

        // Fill the queue to exactly int.MaxValue permits with requests of at most the permit limit.
        var waiters = new List<Task<RateLimitLease>>();
        for (long left = int.MaxValue; left > 0; left -= limit)
        {
            waiters.Add(limiter.AcquireAsync((int)Math.Min(limit, left)).AsTask());
        }

        Assert.All(waiters, waiter => Assert.False(waiter.IsCompleted));
        Assert.Equal(int.MaxValue, limiter.GetStatistics()!.CurrentQueuedCount);

        Task<RateLimitLease> extra = limiter.AcquireAsync(1).AsTask();
        if (order == OldestFirst)
        {
            // int.MaxValue + 1 queued permits would wrap to a negative count: the request must fail instead.
            Assert.False((await Completed(extra)).IsAcquired);
            Assert.False((await limiter.AcquireAsync(limit).AsTask().WaitAsync(GuardTimeout)).IsAcquired);
            Assert.Equal(int.MaxValue, limiter.GetStatistics()!.CurrentQueuedCount);

            Replenish(limiter, time);

            Assert.True((await Completed(waiters[0])).IsAcquired);
        }
        else
        {
            Assert.False((await Completed(waiters[0])).IsAcquired); // evicted to make room
            Assert.False(extra.IsCompleted);
            Assert.Equal((long)int.MaxValue - limit + 1, limiter.GetStatistics()!.CurrentQueuedCount);

            Replenish(limiter, time);

            Assert.True((await Completed(extra)).IsAcquired);
        }

        // OldestFirst turned two requests away; NewestFirst evicted one waiter.
        Assert.Equal(order == OldestFirst ? 2 : 1, limiter.GetStatistics()!.TotalFailedLeases);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Zero permits

    [Fact]
    public void AttemptAcquire_ZeroPermitsWithAvailability_Succeeds()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);

        using RateLimitLease lease = limiter.AttemptAcquire(0);

        Assert.True(lease.IsAcquired);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_ZeroPermitsWithoutAvailability_Fails()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        using RateLimitLease lease = limiter.AttemptAcquire(0);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryAfter(2, 1, TimeSpan.Zero), retryAfter);
    }

    [Fact]
    public void AttemptAcquire_ZeroPermitsWhileWaitersQueuedOldestFirst_IgnoresTheQueue()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        _ = Enqueue(limiter, 2);

        Assert.True(limiter.AttemptAcquire(0).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_ZeroPermitsWithAvailability_CompletesImmediately()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        _ = Enqueue(limiter, 2); // a probe does not take permits, so it does not wait behind waiters

        Task<RateLimitLease> probe = limiter.AcquireAsync(0).AsTask();

        Assert.True(probe.IsCompletedSuccessfully);
        Assert.True((await probe).IsAcquired);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_ZeroPermitsWithoutAvailability_WaitsForAvailability()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        Task<RateLimitLease> probe = Enqueue(limiter, 0);
        time.Advance(ShortWhile);
        Assert.False(probe.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(probe)).IsAcquired);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }
}
