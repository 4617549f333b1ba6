using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="SlidingWindowCounterRateLimiter"/> with per-core blocks and <c>AutoReplenishment = false</c>,
/// and the manual counter's own tests: segments move only in <c>TryReplenish</c>, and a block lives within the segment it
/// was taken in.
/// </summary>
public sealed class ManualPerCoreSlidingWindowCounterRateLimiterTests : ManualSlidingWindowCounterRateLimiterTests
{
    protected override PerCoreReservationOptions? PerCore => new();

    [Fact]
    public void TryReplenish_BlocksOfAnEndedSegment_AreNotUsedAfterTheMove()
    {
        // A core's block took permits counted in the segment it was taken in. Once TryReplenish moves on, they are not used
        // any more: after a whole window of moves the cap is whole again, and no more than the cap is admitted.
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);
        for (int i = 0; i < 100; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        Replenish(limiter, time);
        Assert.Equal(1_000, AdmitOneAtATime(limiter));
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }
}
