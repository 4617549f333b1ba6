using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="SlidingWindowCounterRateLimiter"/> with per-core blocks (<see cref="PerCoreReservationOptions"/>).
/// </summary>
public sealed class PerCoreSlidingWindowCounterRateLimiterTests : SingleLimiterContractTests
{
    private static readonly TimeSpan Segment = SlidingWindowCounterRateLimiterTests.Segment;

    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Segment;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new SlidingWindowCounterRateLimiter(
            SlidingWindowCounterRateLimiterTests.Options(
                permitLimit, Window, SlidingWindowCounterRateLimiterTests.Segments, queueLimit, order, autoReplenishment: true),
            new PerCoreReservationOptions(),
            time);

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window + Segment);

    protected override TimeSpan FullRefill => Window + Segment;

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window + Segment - elapsed;

    [Fact]
    public void AttemptAcquire_BlockLeftOverAtTheSegmentsEnd_StaysCountedUntilItsWindowEnds()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);
        int first = 0;
        for (int i = 0; i < 100 && limiter.AttemptAcquire(1).IsAcquired; i++)
        {
            first++;
        }

        long availableInTheSegment = limiter.GetStatistics()!.CurrentAvailablePermits;
        Assert.Equal(1_000 - first, availableInTheSegment);

        // Next segment: what blocks held of the last one is not usable now, and stays counted for the window (the documented slack).
        time.Advance(Segment);
        long available = limiter.GetStatistics()!.CurrentAvailablePermits;
        Assert.InRange(available, 1_000 - first - (PerCoreStripes() * 63L), 1_000 - first);
        Assert.True(limiter.AttemptAcquire((int)available).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    private static int PerCoreStripes() => (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, 64));
}
