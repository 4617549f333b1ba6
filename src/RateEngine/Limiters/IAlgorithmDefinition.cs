using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Limiters;

/// <summary>
/// How one algorithm is made from its options, written once for the single limiter and the partitioned one alike:
/// validation with the in-box rules and messages, the clock its replenishment mode needs, the algorithm on that clock,
/// and the queue settings.
/// </summary>
/// <typeparam name="TOptions">The options class users fill in.</typeparam>
/// <typeparam name="TAlgorithm">The algorithm the options describe.</typeparam>
/// <typeparam name="TState">The algorithm's per-limiter (or per-key) state.</typeparam>
internal interface IAlgorithmDefinition<TOptions, TAlgorithm, TState>
    where TOptions : class
    where TAlgorithm : struct, IRateAlgorithm<TState>
{
    /// <summary>Checks the options and returns a copy, so that later changes to the caller's instance have no effect.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    static abstract TOptions Validate(TOptions options);

    /// <summary>A single limiter's clock: manual replenishment modes move time only on <c>TryReplenish</c>.</summary>
    static abstract LimiterClock CreateClock(TOptions options, TimeProvider timeProvider);

    /// <summary>The algorithm for validated options, in the ticks of <paramref name="clock"/>.</summary>
    static abstract TAlgorithm CreateAlgorithm(TOptions options, LimiterClock clock);

    /// <summary>The queue settings and what the limiter reports about replenishment.</summary>
    static abstract QueueSettings QueueSettings(TOptions options);
}
