using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

public abstract partial class RateLimiterContractTests
{
    // ---------------------------------------------------------------------------------------------------------------
    // Metadata

    [Fact]
    public async Task SuccessfulLeases_HaveNoMetadata()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 1, OldestFirst, time);
        RateLimitLease attempted = limiter.AttemptAcquire(1);
        RateLimitLease acquired = await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);
        Replenish(limiter, time);
        RateLimitLease served = await Completed(waiter);

        foreach (RateLimitLease lease in new[] { attempted, acquired, served })
        {
            Assert.True(lease.IsAcquired);
            Assert.False(lease.TryGetMetadata(MetadataName.RetryAfter, out _));
            Assert.False(lease.TryGetMetadata(MetadataName.ReasonPhrase, out _));
            Assert.Empty(lease.GetAllMetadata());
            Assert.Empty(lease.MetadataNames);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void AttemptAcquire_Exhausted_RetryAfterIsTimeUntilPermitsReturn(int permits)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);
        time.Advance(ShortWhile);

        using RateLimitLease lease = limiter.AttemptAcquire(permits);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryAfter(4, permits, ShortWhile), retryAfter);
        Assert.True(lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.False(string.IsNullOrWhiteSpace(reason));
    }

    [Theory]
    [InlineData(2, 1)] // 3 of 4: within the first refill
    [InlineData(4, 2)] // the queue takes the next full limit, this request the one after
    public void AttemptAcquire_WaitersQueuedAheadOldestFirst_RetryAfterCoversThem(int queued, int requested)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 8, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);
        _ = Enqueue(limiter, queued);
        time.Advance(ShortWhile);

        using RateLimitLease lease = limiter.AttemptAcquire(requested);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryBehind(4, queued + requested), retryAfter);
    }

    [Theory]
    [InlineData(4, 2, 2, 1)] // 3 of 4: within the first refill
    [InlineData(2, 1, 1, 2)] // 3 of 2: the queued one takes the first refill, this request the second
    public async Task AcquireAsync_QueueFull_RejectionCarriesRetryAfterAndReason(int limit, int queueLimit, int queued, int requested)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(limit, queueLimit, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(limit).IsAcquired);
        _ = Enqueue(limiter, queued);
        time.Advance(ShortWhile);

        using RateLimitLease lease = await limiter.AcquireAsync(requested).AsTask().WaitAsync(GuardTimeout);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryBehind(limit, queued + requested), retryAfter);
        Assert.True(lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.False(string.IsNullOrWhiteSpace(reason));
    }

    /// <summary>
    /// <see cref="ExpectedRetryAfter"/> for <paramref name="permits"/> permits that may exceed the limit (a request behind
    /// queued ones, all taken in order): what is beyond the first full refill comes one <see cref="FullRefill"/> later each.
    /// </summary>
    private TimeSpan ExpectedRetryBehind(int permitLimit, int permits)
    {
        int refills = (permits - 1) / permitLimit;
        return ExpectedRetryAfter(permitLimit, permits - (refills * permitLimit), ShortWhile) + (FullRefill * refills);
    }

    [Fact]
    public void FailedLease_MetadataNames_ContainRetryAfterAndReasonPhrase()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        using RateLimitLease lease = limiter.AttemptAcquire(1);

        Assert.False(lease.IsAcquired);
        Assert.Contains(MetadataName.RetryAfter.Name, lease.MetadataNames);
        Assert.Contains(MetadataName.ReasonPhrase.Name, lease.MetadataNames);
        var all = lease.GetAllMetadata().ToDictionary(pair => pair.Key, pair => pair.Value);
        Assert.IsType<TimeSpan>(all[MetadataName.RetryAfter.Name]);
        Assert.IsType<string>(all[MetadataName.ReasonPhrase.Name]);
    }
}
