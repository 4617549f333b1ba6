using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Algorithms;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="SlidingWindowLogRateLimiter"/> with per-core blocks (<see cref="PerCoreReservationOptions"/>):
/// the log counts each permit for its window plus two block periods less two ticks, and blocks hand permits out only in
/// the block period they were admitted in.
/// </summary>
public sealed class PerCoreSlidingWindowLogRateLimiterTests : RateLimiterContractTests
{
    /// <summary>A block period: 1/256 of the window, in the fake clock's ticks (the limiter's own on it).</summary>
    private static readonly TimeSpan Period = TimeSpan.FromTicks(Window.Ticks / BlockPeriodLog.PeriodsPerWindow);

    /// <summary>How long the log counts a permit: W + 2(D - 1).</summary>
    private static readonly TimeSpan Counted = Window + (2 * Period) - TimeSpan.FromTicks(2);

    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override int LargePermitLimit => 1 << 16;

    protected override TimeSpan FullRefill => Counted;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new SlidingWindowLogRateLimiter(SlidingWindowLogRateLimiterTests.Options(permitLimit, Window, queueLimit, order), new PerCoreReservationOptions(), time);

    // Past the counted span, to the next whole millisecond: the queue's wakeup timer counts whole milliseconds.
    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) =>
        time.Advance(TimeSpan.FromMilliseconds(Math.Ceiling(Counted.TotalMilliseconds)));

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Counted - elapsed;

    [Fact]
    public void AttemptAcquire_ManySmallRequestsInOnePeriod_AdmitExactlyTheLimit()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);
        int admitted = 0;
        while (limiter.AttemptAcquire(1) is { IsAcquired: true })
        {
            admitted++;
        }

        // Within one block period, blocks never hold back a permit: a refusal comes only once all of them are used.
        Assert.Equal(1_000, admitted);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
        time.Advance(Counted);
        Assert.Equal(1_000, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_BlockLeftFromAnEndedPeriod_IsNeverUsedAndStaysCounted()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);
        for (int i = 0; i < 100; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        // In its period a block's permits count as available; in the next one they are over, and the log still counts them.
        Assert.Equal(900, limiter.GetStatistics()!.CurrentAvailablePermits);
        time.Advance(Period);
        long available = limiter.GetStatistics()!.CurrentAvailablePermits;
        Assert.InRange(available, 900 - (PerCoreStripes() * 63L), 899);
        Assert.True(limiter.AttemptAcquire((int)available).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);

        // Everything the first period took, blocks included, comes back together, one counted span after it.
        time.Advance(Counted - Period);
        Assert.Equal(1_000 - available, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_OneRequestAPeriod_HoldsNoPermitBack()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(300, 0, QueueProcessingOrder.OldestFirst, time);

        // A core that sends one request a period never takes a block beyond it: 256 periods a window, each one permit.
        for (int i = 0; i < 256; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
            time.Advance(Period);
        }

        Assert.Equal(300 - 256, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_BlocksOfOne_DecideExactlyAsTheLog()
    {
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(
            SlidingWindowLogRateLimiterTests.Options(2, Window, 0, QueueProcessingOrder.OldestFirst), new PerCoreReservationOptions { MaxBlockSize = 1 }, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromSeconds(3));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(TimeSpan.FromSeconds(5), RetryAfterOf(limiter.AttemptAcquire(1)));
        time.Advance(TimeSpan.FromSeconds(5) - TimeSpan.FromTicks(1));
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromTicks(1));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_RefundedPermitInABlockIdleForItsPeriodToWrap_IsNotUsed()
    {
        // Blocks of one permit: a block period is one tick, and block periods are compared modulo 2^33.
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(
            SlidingWindowLogRateLimiterTests.Options(1, TimeSpan.FromTicks(10), 0, QueueProcessingOrder.OldestFirst),
            new PerCoreReservationOptions { MaxBlockSize = 1 },
            time);

        // A refunded permit goes back to its core's block, usable in its own tick only; the log keeps its slot.
        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation));
        Assert.True(reservation!.Refund());

        // 2^33 ticks later the block's tick reads as now again, and the log's slot is long free: only the log may admit.
        time.Advance(TimeSpan.FromTicks(1L << 33));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    private static int PerCoreStripes() => (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, 64));
}
