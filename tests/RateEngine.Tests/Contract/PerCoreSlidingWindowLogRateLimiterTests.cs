using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Algorithms;
using RateEngine.Limiters;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="SlidingWindowLogRateLimiter"/> with per-core blocks (<see cref="PerCoreReservationOptions"/>):
/// the log counts each permit for its window plus two block periods less two ticks, and blocks hand permits out only in
/// the block period they were admitted in.
/// </summary>
public sealed class PerCoreSlidingWindowLogRateLimiterTests : SingleLimiterContractTests
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
        int admitted = AdmitOneAtATime(limiter);

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
        using RateEngineLimiter limiter = OnOneBlock(1_000, Window, time);

        // Not the first period, whose blocks read as current from the start: blocks must form in any period.
        time.Advance(5 * Period);
        for (int i = 0; i < 100; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        // One core's blocks kept 0, 1, 2, 4, ..., 32, then 63 permits beyond their request: the 8th refill, at the 71st
        // request, covers up to the 134th, so 34 are left. In its period a block's permits count as available.
        Assert.Equal(900, limiter.GetStatistics()!.CurrentAvailablePermits);

        // In the next period they are over, and the log still counts them.
        time.Advance(Period);
        Assert.Equal(900 - 34, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.True(limiter.AttemptAcquire(866).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);

        // Everything the first period took, blocks included, comes back together, one counted span after it.
        time.Advance(Counted - Period);
        Assert.Equal(1_000 - 866, limiter.GetStatistics()!.CurrentAvailablePermits);
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
    public void AttemptAcquire_BurstThenOneRequestAPeriodBesideABusierCore_BlockShrinksToNone()
    {
        var time = new FakeTimeProvider();
        var perCore = new PerCoreReservationOptions { Stripes = 2 };
        using var limiter = new SlidingWindowLogRateLimiter(
            SlidingWindowLogRateLimiterTests.Options(10_000, Window, 0, QueueProcessingOrder.OldestFirst), perCore, time);
        int core = 1;
        ((IPerCoreHost)limiter.Host).ChooseStripe = () => core;

        // Core 1 bursts: its blocks grow to the largest.
        for (int i = 0; i < 200; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        // Then each period core 0 refills first (its sweep empties core 1's leftover block), and core 1 sends one request.
        long availableBefore = 0;
        for (int period = 1; period <= 30; period++)
        {
            time.Advance(Period);
            if (period == 21)
            {
                availableBefore = limiter.GetStatistics()!.CurrentAvailablePermits;
            }

            foreach (int next in new[] { 0, 1 })
            {
                core = next;
                Assert.True(limiter.AttemptAcquire(1).IsAcquired);
            }
        }

        // Core 1's block halved to none within a few periods: the last ten cost their 20 requests and nothing more.
        time.Advance(Period);
        Assert.Equal(availableBefore - 20, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_BusyCoreAcrossPeriods_KeepsItsBlockSize()
    {
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = OnOneBlock(10_000, Window, time);

        // Period 0: blocks of 0, 1, 2, 4, ..., 32, then 63 beyond their request; the refill at the 263rd request covers up
        // to the 326th, so 26 are left when the period ends.
        for (int i = 0; i < 300; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        // Period 1: the core ran out in period 0 too, so its first block keeps 63 (halving it to 31 would leave 51 over at
        // the end, not 20): refills at requests 1, 65, 129, 193 and 257, the last covering up to the 320th.
        time.Advance(Period);
        for (int i = 0; i < 300; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        // Both periods' leftovers stay counted in the log: 300 + 26 and 300 + 20.
        time.Advance(Period);
        Assert.Equal(10_000 - 326 - 320, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void TryReserve_UsesAtBothEndsOfTheirPeriods_StayWithinTheLimitInAnyWindow()
    {
        // Periods of 4 ticks (W = 1,024): a block's permit is used up to 3 ticks after its decision, or up to 3 before it
        // when the taking thread read the clock before another thread's refill decided. Both ends at once need the span's
        // full widening, W + 2(D - 1): with only W + (D - 1), four of these uses would fall in one window of a limit of 3.
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = OnOneBlock(3, TimeSpan.FromTicks(1_024), time);
        var used = new List<Admitted>();
        void Take(long now, int permits, bool keep)
        {
            if (limiter.TryReserve(now, permits, out RateEngineLimiter.Reservation? reservation))
            {
                if (keep)
                {
                    used.Add(new Admitted(reservation.Admission.Stamp, permits));
                }
                else
                {
                    Assert.True(reservation.Refund()); // into its block, for the period it was decided in
                }
            }
        }

        Take(0, 1, keep: true);
        Take(0, 2, keep: false); // two permits decided at 0, back in period 0's block
        time.Advance(TimeSpan.FromTicks(3));
        Take(3, 1, keep: true); // used at period 0's end
        Take(3, 1, keep: true);
        time.Advance(TimeSpan.FromTicks(1_024));
        Take(1_027, 2, keep: false); // decided at period 256's end, if the log lets them in: back in its block
        Take(1_024, 1, keep: true); // a thread whose clock read 1,024: period 256's start
        Take(1_024, 1, keep: true);

        Assert.Null(Guarantee.FindViolation(new LimiterSpec(LimiterKind.Log, 3, 1_024), used));
    }

    [Fact]
    public void AttemptAcquire_LongestWindow_AdmitsExactlyTheLimit()
    {
        // The counted span W + 2(D - 1) is capped like every window: a never-used slot must still read as expired.
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(
            SlidingWindowLogRateLimiterTests.Options(3, TimeSpan.MaxValue, 0, QueueProcessingOrder.OldestFirst), new PerCoreReservationOptions(), time);

        Assert.Equal(3, AdmitOneAtATime(limiter));
    }

    [Fact]
    public void AttemptAcquire_BlocksOfOne_DecideAndRefundExactlyAsTheLog()
    {
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(
            SlidingWindowLogRateLimiterTests.Options(2, Window, 0, QueueProcessingOrder.OldestFirst), new PerCoreReservationOptions { MaxBlockSize = 1 }, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromSeconds(3));
        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation));
        Assert.True(reservation!.Refund());
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(TimeSpan.FromSeconds(5), RetryAfterOf(limiter.AttemptAcquire(1)));
        time.Advance(TimeSpan.FromSeconds(5) - TimeSpan.FromTicks(1));
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromTicks(1));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_BlockIdleForItsPeriodToWrap_IsNotUsed()
    {
        // A window of 256 ticks: a block period is one tick, and block periods are compared modulo 2^33.
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = OnOneBlock(100, TimeSpan.FromTicks(BlockPeriodLog.PeriodsPerWindow), time);

        // The second request's refill keeps one permit in the block, usable in its own tick only: the log counts 3, 1 is held.
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(97 + 1, limiter.GetStatistics()!.CurrentAvailablePermits);

        // 2^33 ticks later the block's tick reads as now again, and the log is long empty: only its 100 may pass.
        time.Advance(TimeSpan.FromTicks(1L << 33));
        Assert.True(limiter.AttemptAcquire(100).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_EmptyBlockIdleWhileAnotherCoreRefills_StillFormsABlockWhenItsAgeNearsTheWrap()
    {
        // Block periods of one tick, compared modulo 2^33. Core 1 takes one request at tick 0 and then idles while core 0
        // refills every 2^29 ticks; core 1's empty block must not age into "a period ahead" (2^33 - 5 ticks old reads as 5
        // ahead), where no block could be installed for it.
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(
            SlidingWindowLogRateLimiterTests.Options(100, TimeSpan.FromTicks(BlockPeriodLog.PeriodsPerWindow), 0, QueueProcessingOrder.OldestFirst),
            new PerCoreReservationOptions { Stripes = 2 },
            time);
        int core = 1;
        ((IPerCoreHost)limiter.Host).ChooseStripe = () => core;
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        core = 0;
        for (int i = 1; i < 16; i++)
        {
            time.Advance(TimeSpan.FromTicks(1L << 29));
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        time.Advance(TimeSpan.FromTicks((1L << 33) - 5 - (15L << 29)));
        core = 1;
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        // The second refill in this tick kept one permit in core 1's block: the log counts 3 now, and the block holds 1.
        Assert.Equal(97 + 1, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    /// <summary>A log with blocks on one stripe, so that a test can count what the blocks hold wherever its thread runs.</summary>
    private static RateEngineLimiter OnOneBlock(int limit, TimeSpan window, FakeTimeProvider time) =>
        new SlidingWindowLogRateLimiter(
            SlidingWindowLogRateLimiterTests.Options(limit, window, 0, QueueProcessingOrder.OldestFirst), new PerCoreReservationOptions { Stripes = 1 }, time);
}
