using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="SlidingWindowCounterRateLimiter"/> with automatic replenishment, plus its options and its
/// conservative segments.
/// </summary>
public sealed class SlidingWindowCounterRateLimiterTests : SingleLimiterContractTests
{
    internal const int Segments = 5;

    internal static readonly TimeSpan Segment = Window / Segments;

    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Segment;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new SlidingWindowCounterRateLimiter(Options(permitLimit, Window, Segments, queueLimit, order, autoReplenishment: true), time);

    // A permit taken in segment j is free when segment j + S + 1 begins: at most one window and one segment later.
    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window + Segment);

    // Everything was taken in segment 0, so it all returns when segment S + 1 begins.
    protected override TimeSpan FullRefill => Window + Segment;

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window + Segment - elapsed;

    [Theory]
    [InlineData(SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow + 1)]
    [InlineData(int.MaxValue - 1)]
    [InlineData(int.MaxValue)]
    public void Ctor_MoreSegmentsThanTheBound_ThrowsArgumentOutOfRangeNamingTheOptionAndTheBound(int segments)
    {
        var options = Options(1, TimeSpan.FromDays(1), segments, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new SlidingWindowCounterRateLimiter(options, new FakeTimeProvider()));

        Assert.Contains("SegmentsPerWindow", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"{SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow}", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Ctor_SegmentsAtTheBound_AreAccepted()
    {
        using var limiter = new SlidingWindowCounterRateLimiter(Options(
            1, TimeSpan.FromDays(1), SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow, 0, QueueProcessingOrder.OldestFirst, true), new FakeTimeProvider());
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void Ctor_OneSegmentPerWindowTick_IsAccepted()
    {
        using var limiter = new SlidingWindowCounterRateLimiter(
            Options(1, TimeSpan.FromTicks(5), 5, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true), new FakeTimeProvider());

        Assert.Equal(TimeSpan.FromTicks(1), limiter.ReplenishmentPeriod);
    }

    [Fact]
    public async Task Ctor_OptionsChangedAfterwards_HaveNoEffect()
    {
        var time = new FakeTimeProvider();
        var options = Options(1, Window, Segments, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true);
        using var limiter = new SlidingWindowCounterRateLimiter(options, time);

        options.PermitLimit = 5;
        options.Window = TimeSpan.FromSeconds(1);
        options.SegmentsPerWindow = 1;
        options.QueueLimit = 5;
        options.AutoReplenishment = false;

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired); // still no queue
        Assert.True(limiter.IsAutoReplenishing);
        Assert.Equal(Segment, limiter.ReplenishmentPeriod);
        time.Advance(Window + Segment);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_PermitTakenInASegment_ReturnsWhenTheSegmentAWindowLaterBegins()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, QueueProcessingOrder.OldestFirst, time);
        time.Advance(TimeSpan.FromSeconds(3));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired); // at 3 s, in segment 1 = [2 s, 4 s)

        // An exact window would free it at 13 s; the counter holds it until segment 7 begins, at 14 s.
        time.Advance(Window);
        Assert.Equal(TimeSpan.FromSeconds(1), RetryAfterOf(limiter.AttemptAcquire(1)));
        time.Advance(TimeSpan.FromSeconds(1) - TimeSpan.FromTicks(1));
        Assert.Equal(TimeSpan.FromTicks(1), RetryAfterOf(limiter.AttemptAcquire(1)));
        time.Advance(TimeSpan.FromTicks(1));

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_PermitsInDifferentSegments_ReturnSegmentBySegment()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired); // segment 0
        time.Advance(Segment);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired); // segment 1

        time.Advance(Window - Segment); // 10 s, segment 5: nothing back yet
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.Equal(Segment, RetryAfterOf(limiter.AttemptAcquire(1)));
        Assert.Equal(Segment * 2, RetryAfterOf(limiter.AttemptAcquire(2)));

        time.Advance(Segment); // segment 6: segment 0's permit is back
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
        time.Advance(Segment); // segment 7: all back
        Assert.Equal(3, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_Waiter_IsServedTheTickItsPermitsReturn()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, QueueProcessingOrder.OldestFirst, time);

        await AssertWaiterServedAfter(limiter, time, Window + Segment);
    }

    [Fact]
    public async Task AcquireAsync_WaitLongerThanATimerCanBeSet_IsServed()
    {
        var time = new FakeTimeProvider();
        TimeSpan window = TimeSpan.FromDays(60);
        using var limiter = new SlidingWindowCounterRateLimiter(
            Options(1, window, 1, 1, QueueProcessingOrder.OldestFirst, autoReplenishment: true), time);

        await AssertWaiterServedAfter(limiter, time, window * 2);
    }

    [Fact]
    public async Task AcquireAsync_PermitReturnsBetweenMilliseconds_TimerNeverFiresEarly()
    {
        // 1 s in 3 segments of 333.3333334 ms: the permit returns at 1333.3336 ms, which no millisecond timer can hit.
        var time = new MillisecondTimerTimeProvider();
        DateTimeOffset start = time.GetUtcNow();
        using var limiter = new SlidingWindowCounterRateLimiter(
            Options(1, TimeSpan.FromSeconds(1), 3, 1, QueueProcessingOrder.OldestFirst, autoReplenishment: true), time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);
        Assert.Equal(TimeSpan.FromTicks(13_333_336), RetryAfterOf(limiter.AttemptAcquire(1)) / 2); // behind the waiter: two refills

        // Move the clock a millisecond at a time, as a real timer thread would see it.
        for (int ms = 0; ms < 2_000 && !waiter.IsCompleted; ms++)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
        }

        Assert.True((await Completed(waiter)).IsAcquired);
        Assert.Equal(TimeSpan.FromMilliseconds(1334), time.GetUtcNow() - start);
        Assert.Equal(1, time.Callbacks); // a wakeup before the permit is back would find nothing to serve
    }

    internal static SlidingWindowCounterRateLimiterOptions Options(
        int permitLimit, TimeSpan window, int segments, int queueLimit, QueueProcessingOrder order, bool autoReplenishment) => new()
    {
        PermitLimit = permitLimit,
        Window = window,
        SegmentsPerWindow = segments,
        QueueLimit = queueLimit,
        QueueProcessingOrder = order,
        AutoReplenishment = autoReplenishment,
    };
}
