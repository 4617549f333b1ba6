using Microsoft.Extensions.Time.Testing;
using RateEngine.Tests.Support;
using RateEngine.Timing;

namespace RateEngine.Tests.Timing;

public class LimiterClockTests
{
    [Fact]
    public void RetryAfter_OnTheCoarseClock_CoversARetryReadingThatLagsMoreThanTheRefusals()
    {
        // The refusal read the coarse clock just after a tick; the retry reads it 0.4 ms after one. Measured from the first
        // reading alone, RETRY_AFTER left the retry 0.4 ms short of the window it was told to wait for.
        using var window = new CoarseWindow();
        Assert.True(window.Limiter.AttemptAcquire(1).IsAcquired);
        window.TickEvery(TimeSpan.FromMilliseconds(500), times: 1);

        TimeSpan retryAfter = window.RefusedRetryAfter();

        Assert.True(window.RetryAdmitted(retryAfter, sinceTheLastTick: TimeSpan.FromMilliseconds(0.4)));
    }

    [Fact]
    public void RetryAfter_OnACoarseClockWhoseTicksComeLate_CoversTheirRealGap()
    {
        // A 1 ms ticker whose thread wakes every 16 ms (a Windows timer period, or a loaded machine): the retry's reading
        // may lag 15 ms. One period of margin left it refused again.
        using var window = new CoarseWindow();
        Assert.True(window.Limiter.AttemptAcquire(1).IsAcquired);
        window.TickEvery(TimeSpan.FromMilliseconds(16), times: 30);

        TimeSpan retryAfter = window.RefusedRetryAfter();

        Assert.True(window.RetryAdmitted(retryAfter, sinceTheLastTick: TimeSpan.FromMilliseconds(15)));
    }

    [Fact]
    public void RetryAfter_AfterOneLongStallOfTheTicker_IsNotLengthenedByIt()
    {
        // A 5 s pause (a blocking collection, a paused VM) is not a lag the retry will meet again.
        using var window = new CoarseWindow();
        window.Coarse.Tick();
        window.TickEvery(TimeSpan.FromSeconds(5), times: 1);
        Assert.True(window.Limiter.AttemptAcquire(1).IsAcquired);

        TimeSpan retryAfter = window.RefusedRetryAfter();

        Assert.InRange(retryAfter, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1) + TimeSpan.FromMilliseconds(16));
    }

    [Fact]
    public void RetryAfter_ManualStepsAtAFrequencyThatCannotShowThePeriod_IsLongEnough()
    {
        // A 1 kHz provider needs 334 ms for each step of a third of a second: counted as 333.33 ms each, RETRY_AFTER came
        // a step's rounding short per step, and a retry then found one step missing.
        var time = new MillisecondClock();
        using var limiter = new SlidingWindowCounterRateLimiter(
            new SlidingWindowCounterRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromSeconds(1), SegmentsPerWindow = 3, AutoReplenishment = false }, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using System.Threading.RateLimiting.RateLimitLease refused = limiter.AttemptAcquire(1);
        Assert.True(refused.TryGetMetadata(System.Threading.RateLimiting.MetadataName.RetryAfter, out TimeSpan retryAfter));

        for (long ms = 1; ms <= (long)retryAfter.TotalMilliseconds; ms++)
        {
            time.Milliseconds = ms; // the application's timer replenishes every millisecond
            limiter.TryReplenish();
        }

        using System.Threading.RateLimiting.RateLimitLease retried = limiter.AttemptAcquire(1);
        Assert.True(retried.IsAcquired);
    }

    /// <summary>
    /// A fixed window of 1 permit a second on a coarse clock that ticks only when the test says (<see cref="ManualTicks"/>),
    /// so that real time and the cached clock can be moved apart as a late ticker would.
    /// </summary>
    private sealed class CoarseWindow : IDisposable
    {
        public CoarseWindow()
        {
            Coarse = Source.CreateProvider();
            Limiter = new LockFreeFixedWindowRateLimiter(
                new System.Threading.RateLimiting.FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromSeconds(1), QueueLimit = 0 }, Coarse);
        }

        public ManualTicks Source { get; } = new(TimeSpan.FromSeconds(10));

        public CoarseTimeProvider Coarse { get; }

        public LockFreeFixedWindowRateLimiter Limiter { get; }

        public void TickEvery(TimeSpan gap, int times)
        {
            for (int i = 0; i < times; i++)
            {
                Source.Advance(gap);
                Coarse.Tick();
            }
        }

        /// <summary>The RETRY_AFTER of an acquire refused now.</summary>
        public TimeSpan RefusedRetryAfter()
        {
            using System.Threading.RateLimiting.RateLimitLease refused = Limiter.AttemptAcquire(1);
            Assert.False(refused.IsAcquired);
            Assert.True(refused.TryGetMetadata(System.Threading.RateLimiting.MetadataName.RetryAfter, out TimeSpan retryAfter));
            return retryAfter;
        }

        /// <summary>Whether a retry <paramref name="retryAfter"/> later, reading a stamp ticked <paramref name="sinceTheLastTick"/> before, is admitted.</summary>
        public bool RetryAdmitted(TimeSpan retryAfter, TimeSpan sinceTheLastTick)
        {
            Source.Advance(retryAfter - sinceTheLastTick);
            Coarse.Tick();
            Source.Advance(sinceTheLastTick);
            using System.Threading.RateLimiting.RateLimitLease retried = Limiter.AttemptAcquire(1);
            return retried.IsAcquired;
        }

        public void Dispose()
        {
            Limiter.Dispose();
            Coarse.Dispose();
        }
    }

    /// <summary>A provider counting whole milliseconds (as one on <c>Environment.TickCount64</c> would).</summary>
    private sealed class MillisecondClock : TimeProvider
    {
        public long Milliseconds { get; set; }

        public override long TimestampFrequency => 1_000;

        public override long GetTimestamp() => Milliseconds;
    }

    [Fact]
    public void Now_CoarseProvider_ReadsTheCachedTimestampOnly()
    {
        var source = new ManualTicks(TimeSpan.FromSeconds(1));
        using CoarseTimeProvider coarse = source.CreateProvider();
        var clock = new LimiterClock(coarse);

        source.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(0, clock.Now()); // the ticker has not ticked: time stands still

        coarse.Tick();
        Assert.Equal(ManualTicks.ToTimestamp(TimeSpan.FromSeconds(5)), clock.Now());
        Assert.Equal(source.Now, clock.Timestamp());
    }

    [Fact]
    public void Now_CoarseSourceGoesBack_NeverDecreases()
    {
        var source = new ManualTicks(TimeSpan.FromSeconds(10));
        using CoarseTimeProvider coarse = source.CreateProvider();
        var clock = new LimiterClock(coarse);
        source.Advance(TimeSpan.FromSeconds(1));
        coarse.Tick();
        long before = clock.Now();

        source.Advance(TimeSpan.FromSeconds(-5));
        coarse.Tick();

        Assert.Equal(before, clock.Now());
    }

    [Fact]
    public void Now_CoarseProvider_StartsItsTicker()
    {
        using var coarse = new CoarseTimeProvider();
        Assert.False(coarse.IsTicking);

        var clock = new LimiterClock(coarse);

        Assert.True(coarse.IsTicking);
        long first = clock.Now();
        Assert.True(SpinWait.SpinUntil(() => clock.Now() > first, TimeSpan.FromSeconds(10)), "the ticker never moved the clock it feeds");
    }

    [Fact]
    public void Now_OtherProvider_StillClampedToTheLargestTimeSeen()
    {
        // The coarse fast path must not have taken the high-water mark away from the providers that need it.
        var time = new FakeTimeProvider();
        var clock = new LimiterClock(time);
        time.Advance(TimeSpan.FromSeconds(2));
        long before = clock.Now();

        time.AdjustTime(time.GetUtcNow() - TimeSpan.FromSeconds(1));

        Assert.Equal(before, clock.Now());
    }
}
