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

    [Fact]
    public Task AttemptAcquire_HeadWaiterNeedsMoreThanIsFree_RetryAfterIsLateEnoughToBeAdmitted() =>
        // 3 of 4 free, a waiter for 4 at the head: it is served at the first refill and takes the whole limit, so a request
        // behind it passes no sooner than the refill after that, though 1 permit is free now.
        RefusedBehindAWaiterForTheWholeLimit_IsAdmittedAtItsRetryAfter(taken: 1, permits: 1);

    [Fact]
    public Task AttemptAcquire_ZeroPermitsBehindAQueue_RetryAfterIsLateEnoughForAPermitLeftOver() =>
        // A probe asks whether one permit is free. Behind a waiter for the whole limit, the first refill goes to the waiter:
        // a retry then would find nothing left and be refused again.
        RefusedBehindAWaiterForTheWholeLimit_IsAdmittedAtItsRetryAfter(taken: 4, permits: 0);

    /// <summary>
    /// Takes <paramref name="taken"/> of 4 permits, queues a waiter for all 4, and has an attempt for
    /// <paramref name="permits"/> refused; at its RETRY_AFTER the waiter has been served and the same attempt passes.
    /// </summary>
    private async Task RefusedBehindAWaiterForTheWholeLimit_IsAdmittedAtItsRetryAfter(int taken, int permits)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 8, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(taken).IsAcquired);
        Task<RateLimitLease> head = Enqueue(limiter, 4);
        time.Advance(ShortWhile);

        using RateLimitLease refused = limiter.AttemptAcquire(permits);
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));

        // A millisecond at a time: the fake runs a timer's callback at the time an advance ends, and the head's permits count
        // from when it is served. A manual limiter is replenished at each step, as an application's timer would do it; an
        // automatic one ignores that. One millisecond more: a wake-up timer counts whole ones, so the head may be served up
        // to one after its permits were free, which no RETRY_AFTER can know of.
        AdvanceReplenishing(limiter, time, retryAfter + TimeSpan.FromMilliseconds(1));

        Assert.True(head.IsCompleted);
        Assert.True((await head).IsAcquired);
        using RateLimitLease retried = limiter.AttemptAcquire(permits);
        if (!retried.IsAcquired)
        {
            Assert.Fail($"refused again at RETRY_AFTER ({retryAfter}), then told {RetryAfterOf(retried)} more");
        }
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
