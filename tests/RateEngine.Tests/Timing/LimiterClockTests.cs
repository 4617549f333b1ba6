using Microsoft.Extensions.Time.Testing;
using RateEngine.Tests.Support;
using RateEngine.Timing;

namespace RateEngine.Tests.Timing;

public class LimiterClockTests
{
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
