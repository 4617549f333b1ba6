using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeFixedWindowRateLimiter"/> with per-core blocks (<see cref="PerCoreReservationOptions"/>):
/// the blocks change where permits wait, never what the limiter promises.
/// </summary>
public sealed class PerCoreLockFreeFixedWindowRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new LockFreeFixedWindowRateLimiter(
            LockFreeFixedWindowRateLimiterTests.Options(permitLimit, Window, queueLimit, order, autoReplenishment: true),
            new PerCoreReservationOptions(),
            time);

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window);

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window - elapsed;

    [Fact]
    public void AttemptAcquire_ManySmallRequests_AdmitExactlyTheLimitPerWindow()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);

        for (int window = 0; window < 3; window++)
        {
            int admitted = AdmitOneAtATime(limiter);

            // Blocks never hold back a permit of the current window: a refusal comes only once all of them are used.
            Assert.Equal(1_000, admitted);
            Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
            time.Advance(Window);
            Assert.Equal(1_000, limiter.GetStatistics()!.CurrentAvailablePermits);
        }
    }

    [Fact]
    public void AttemptAcquire_BlockLeftFromTheLastWindow_IsNeverUsedInTheNext()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);
        for (int i = 0; i < 100; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        // The blocks taken late in the first window hold permits of that window only: the next window has the whole limit.
        time.Advance(Window);
        Assert.True(limiter.AttemptAcquire(1_000).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    /// <summary>The README's "per-core blocks" lines, as written there: a fixed window, a counter and a log, on either clock.</summary>
    [Fact]
    public void Readme_PerCoreBlocks_TheLinesAsWrittenKeepTheirLimits()
    {
        var options = new FixedWindowRateLimiterOptions { PermitLimit = 1_000, Window = TimeSpan.FromHours(1) };
        var counterOptions = new SlidingWindowCounterRateLimiterOptions { PermitLimit = 1_000, Window = TimeSpan.FromHours(1), SegmentsPerWindow = 4 };
        var logOptions = new SlidingWindowLogRateLimiterOptions { PermitLimit = 1_000, Window = TimeSpan.FromHours(1) };

        var global = new LockFreeFixedWindowRateLimiter(options, new PerCoreReservationOptions(), TimeProvider.System);
        var perTool = new SlidingWindowCounterRateLimiter(counterOptions, new PerCoreReservationOptions { MaxBlockSize = 32 }, CoarseTimeProvider.Shared);
        var exact = new SlidingWindowLogRateLimiter(logOptions, new PerCoreReservationOptions(), TimeProvider.System);

        using (global)
        using (perTool)
        using (exact)
        {
            foreach (RateLimiter limiter in new RateLimiter[] { global, perTool, exact })
            {
                int admitted = 0;
                Parallel.For(0, 4, _ =>
                {
                    for (int i = 0; i < 600; i++)
                    {
                        if (limiter.AttemptAcquire(1).IsAcquired)
                        {
                            Interlocked.Increment(ref admitted);
                        }
                    }
                });

                // 2,400 attempts from four threads within the hour's first window (and the log's first block period, 14 s
                // from its creation): exactly the limit passes.
                Assert.Equal(1_000, admitted);
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(PerCoreReservationOptions.MaxBlockSizeLimit + 1)]
    public void Ctor_MaxBlockSizeOutOfRange_ThrowsArgumentOutOfRange(int size)
    {
        var options = LockFreeFixedWindowRateLimiterTests.Options(10, Window, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(
            () => new LockFreeFixedWindowRateLimiter(options, new PerCoreReservationOptions { MaxBlockSize = size }, TimeProvider.System));
        Assert.Equal("perCore", ex.ParamName);
    }

    [Fact]
    public void Ctor_NullPerCoreOptions_ThrowsArgumentNull()
    {
        var options = LockFreeFixedWindowRateLimiterTests.Options(10, Window, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true);

        Assert.Throws<ArgumentNullException>("perCore", () => new LockFreeFixedWindowRateLimiter(options, null!, TimeProvider.System));
    }
}
