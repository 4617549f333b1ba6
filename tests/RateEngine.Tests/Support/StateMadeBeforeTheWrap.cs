using RateEngine.Algorithms;

namespace RateEngine.Tests.Support;

/// <summary>
/// An epoch word (fixed window, counter) made for a key created 10 periods of 10 ticks before the epochs wrap at 2^33: a
/// state of period 0 would read as a period ahead and take every request into it. Made with <c>CreateState(now)</c>, it
/// admits its limit of 1 at now, refuses until the permit is back (<see cref="IRateAlgorithm{TState}.RefillTicks"/>), and
/// admits again then, each stamped at its own time.
/// </summary>
internal static class StateMadeBeforeTheWrap
{
    /// <param name="algorithm">A limit of 1 per period of 10 ticks.</param>
    public static void CountsFromNowsPeriod<TAlgorithm, TState>(TAlgorithm algorithm)
        where TAlgorithm : IRateAlgorithm<TState>
    {
        long now = ((1L << 33) - 10) * 10;
        long back = now + algorithm.RefillTicks;
        TState state = algorithm.CreateState(now);

        Assert.True(algorithm.TryAcquire(ref state, now, 1, out Admission first, out _));
        Assert.Equal(now, first.Stamp);
        Assert.False(algorithm.TryAcquire(ref state, back - 1, 1, out _, out _));
        Assert.True(algorithm.TryAcquire(ref state, back, 1, out Admission next, out _));
        Assert.Equal(back, next.Stamp);
    }
}
