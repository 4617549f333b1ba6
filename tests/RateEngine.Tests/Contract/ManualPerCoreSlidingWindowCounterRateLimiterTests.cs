using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="SlidingWindowCounterRateLimiter"/> with per-core blocks and <c>AutoReplenishment = false</c>:
/// segments move only in <c>TryReplenish</c>, and a block lives within the segment it was taken in.
/// </summary>
public sealed class ManualPerCoreSlidingWindowCounterRateLimiterTests : SingleLimiterContractTests
{
    private const int Segments = SlidingWindowCounterRateLimiterTests.Segments;

    private static readonly TimeSpan Segment = SlidingWindowCounterRateLimiterTests.Segment;

    protected override bool ExpectedAutoReplenishing => false;

    protected override TimeSpan ExpectedReplenishmentPeriod => Segment;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new SlidingWindowCounterRateLimiter(
            SlidingWindowCounterRateLimiterTests.Options(permitLimit, Window, Segments, queueLimit, order, autoReplenishment: false),
            new PerCoreReservationOptions(),
            time);

    // As without blocks: a permit taken in segment j is free once S + 1 moves have started segment j + S + 1.
    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time)
    {
        for (int move = 0; move <= Segments; move++)
        {
            time.Advance(Segment);
            Assert.True(limiter.TryReplenish());
        }
    }

    protected override TimeSpan FullRefill => Window + Segment;

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) =>
        (Segment * Segments) + (elapsed < Segment ? Segment - elapsed : TimeSpan.Zero);

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
