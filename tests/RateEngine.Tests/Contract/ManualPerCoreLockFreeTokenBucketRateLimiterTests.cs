using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeTokenBucketRateLimiter"/> with per-core blocks and <c>AutoReplenishment = false</c>,
/// and the manual bucket's own tests: the blocks run on the manual clock, which <c>TryReplenish</c> moves by the provider
/// time elapsed since the last credit.
/// </summary>
public sealed class ManualPerCoreLockFreeTokenBucketRateLimiterTests : ManualLockFreeTokenBucketRateLimiterTests
{
    protected override PerCoreReservationOptions? PerCore => new();

    [Fact]
    public void TryReplenish_TokensABlockHeld_ComeBackOnlyWithTheCreditedTime()
    {
        // Blocks hand out tokens the shared bucket gave them: without a TryReplenish no time passes for either, however far
        // the provider moves, and a credit brings back exactly its share.
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(100, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.Equal(100, AdmitOneAtATime(limiter));

        time.Advance(Window * 10);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.True(limiter.TryReplenish()); // credits the whole time since creation, capped at the burst
        Assert.Equal(100, AdmitOneAtATime(limiter));
    }
}
