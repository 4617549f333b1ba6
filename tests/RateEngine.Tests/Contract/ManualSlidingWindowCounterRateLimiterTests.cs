using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="SlidingWindowCounterRateLimiter"/> with <c>AutoReplenishment = false</c>: segments move
/// only in <c>TryReplenish</c>, one per call, and only once a segment's length of time has passed since the last move.
/// </summary>
public class ManualSlidingWindowCounterRateLimiterTests : SingleLimiterContractTests
{
    private const int Segments = SlidingWindowCounterRateLimiterTests.Segments;

    private static readonly TimeSpan Segment = SlidingWindowCounterRateLimiterTests.Segment;

    protected override bool ExpectedAutoReplenishing => false;

    protected override TimeSpan ExpectedReplenishmentPeriod => Segment;

    /// <summary>The per-core blocks of the derived contract run; none here.</summary>
    protected virtual PerCoreReservationOptions? PerCore => null;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time)
    {
        SlidingWindowCounterRateLimiterOptions options = SlidingWindowCounterRateLimiterTests.Options(permitLimit, Window, Segments, queueLimit, order, autoReplenishment: false);
        return PerCore is { } perCore ? new SlidingWindowCounterRateLimiter(options, perCore, time) : new SlidingWindowCounterRateLimiter(options, time);
    }

    // A permit taken in segment j is free once S + 1 moves have started segment j + S + 1.
    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time)
    {
        for (int move = 0; move <= Segments; move++)
        {
            time.Advance(Segment);
            Assert.True(limiter.TryReplenish());
        }
    }

    // S + 1 moves are needed; the first may happen one segment after the last move (here: creation), each other a segment later.
    protected override TimeSpan FullRefill => Window + Segment;

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) =>
        (Segment * Segments) + (elapsed < Segment ? Segment - elapsed : TimeSpan.Zero);

    [Fact]
    public void TryReplenish_MovesOneSegmentPerCallAndOnlyAfterAFullSegment()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        time.Advance(Window * 10); // however much time has passed, one call moves one segment
        Assert.True(limiter.TryReplenish());
        Assert.True(limiter.TryReplenish()); // too soon after the last move: no move
        time.Advance(Segment - TimeSpan.FromTicks(1));
        Assert.True(limiter.TryReplenish()); // still too soon
        time.Advance(TimeSpan.FromTicks(1));

        for (int move = 2; move <= Segments; move++)
        {
            Assert.True(limiter.TryReplenish());
            Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
            time.Advance(Segment);
        }

        Assert.True(limiter.TryReplenish()); // move S + 1
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_AfterSomeMoves_RetryAfterCountsFromTheLastMove()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        time.Advance(Segment);
        Assert.True(limiter.TryReplenish()); // move 1 of 6

        time.Advance(TimeSpan.FromMilliseconds(500));

        // Five moves to go: the next one 1.5 s from now, then four more a segment apart.
        Assert.Equal((Segment * 4) + TimeSpan.FromMilliseconds(1500), RetryAfterOf(limiter.AttemptAcquire(1)));
    }
}
