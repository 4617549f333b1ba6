using Microsoft.Extensions.Time.Testing;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Tests.Support;

/// <summary>
/// An epoch word (fixed window, counter) against a clock read that a stalled thread took more than
/// <see cref="EpochCount.MaxLag"/> periods before the word's: taken at face value it wraps to a distance that reads as a
/// later period, and would move the word back to a period that is over and admit there. The algorithm must read its clock
/// again and decide in the word's period, where the limit of 2 is used up.
/// </summary>
internal static class StalledClockRead
{
    /// <param name="create">The algorithm: a limit of 2 per period of 10 ticks, on the clock it is given.</param>
    /// <param name="stalledPeriods">How many periods the word is ahead of the stalled read (past 2^20, which wraps the 33-bit epoch).</param>
    public static void IsDecidedInTheWordsPeriod<TAlgorithm, TState>(Func<LimiterClock, TAlgorithm> create, long stalledPeriods)
        where TAlgorithm : IRateAlgorithm<TState>
    {
        var time = new FakeTimeProvider();
        var clock = new LimiterClock(time);
        TAlgorithm algorithm = create(clock);
        TState state = algorithm.CreateState();
        time.Advance(TimeSpan.FromTicks(10 * stalledPeriods));
        long now = clock.Now();
        Assert.True(algorithm.TryAcquire(ref state, now, 2, out _, out _));

        Assert.False(algorithm.TryAcquire(ref state, 5, 1, out _, out _)); // the stalled thread's read, from period 0
        Assert.False(algorithm.TryAcquire(ref state, now, 1, out _, out _));
    }
}
