using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

public abstract partial class RateLimiterContractTests
{
    // ---------------------------------------------------------------------------------------------------------------
    // Disposal

    [Fact]
    public async Task Dispose_WithQueuedWaiters_CompletesThemWithFailedLeases()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);

        limiter.Dispose();

        Assert.False((await Completed(first)).IsAcquired);
        Assert.False((await Completed(second)).IsAcquired);
        Assert.Equal([MetadataName.ReasonPhrase.Name], (await first).MetadataNames); // no RETRY_AFTER: none is listed

        // Permits coming back later serve nobody and throw nowhere.
        Replenish(limiter, time);
    }

    [Fact]
    public async Task DisposeAsync_WithQueuedWaiters_CompletesThemWithFailedLeases()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);

        await limiter.DisposeAsync();

        Assert.False((await Completed(first)).IsAcquired);
        Assert.False((await Completed(second)).IsAcquired);
        Replenish(limiter, time);
    }

    [Fact]
    public void Dispose_Afterwards_AcquiringAndStatisticsThrowObjectDisposed()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);

        limiter.Dispose();

        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire(1));
        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire(0));
        Assert.Throws<ObjectDisposedException>(() => StartAcquire(limiter, 1));
        Assert.Throws<ObjectDisposedException>(() => StartAcquire(limiter, 0));
        Assert.Throws<ObjectDisposedException>(() => limiter.GetStatistics());

        // The argument checks still come first.
        Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(-1));
    }

    [Fact]
    public void Dispose_Afterwards_IdleDurationStillAnswers()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);

        limiter.Dispose();

        Assert.NotNull(limiter.IdleDuration);
    }

    [Fact]
    public async Task Dispose_Twice_IsHarmless()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);

        limiter.Dispose();
        limiter.Dispose();
        await limiter.DisposeAsync();

        Assert.False((await Completed(waiter)).IsAcquired);
        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire(1));
    }

    [Fact]
    public async Task Dispose_AfterCancellingQueuedRequest_Succeeds()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> cancelled = Enqueue(limiter, 1, cts.Token);
        Task<RateLimitLease> other = Enqueue(limiter, 1);
        await cts.CancelAsync();

        limiter.Dispose();

        await Assert.ThrowsAsync<TaskCanceledException>(() => cancelled.WaitAsync(GuardTimeout));
        Assert.False((await Completed(other)).IsAcquired);
    }
}
