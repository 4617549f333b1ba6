namespace RateEngine.Algorithms;

/// <summary>
/// An algorithm whose permits are counted in aligned periods of <see cref="PeriodTicks"/> (a fixed window's window, a
/// counter's segment, a per-core log's block period), so that permits taken in one weighted admission may be handed out later by a per-core block
/// (<c>Limiters/StripedHost</c>) for as long as that period lasts.
/// </summary>
/// <remarks>
/// An admission's <see cref="Admission.Marker"/> is its period's epoch: every permit it took is counted in
/// [epoch * PeriodTicks, (epoch + 1) * PeriodTicks), and a permit used at any time inside it is counted exactly where a
/// permit admitted then would be (for a window and a counter; the log counts it at its decision's stamp and covers the
/// difference with a longer span: <see cref="BlockPeriodLog"/>). The token bucket is not one: its tokens are not tied to a period, and a token taken
/// early and used late would stretch its burst.
/// </remarks>
/// <typeparam name="TState">The mutable per-limiter state.</typeparam>
internal interface IPeriodBlockAlgorithm<TState> : IRateAlgorithm<TState>
{
    /// <summary>The length of the period an admission's permits are counted in, in clock ticks.</summary>
    long PeriodTicks { get; }

    /// <summary>
    /// True while <paramref name="state"/> still counts period <paramref name="epoch"/> as its current one, so that a permit
    /// of that period given back to a block frees a permit that still counts.
    /// </summary>
    bool CountsPeriod(ref TState state, long epoch);

    /// <summary>
    /// <see cref="IRateAlgorithm{TState}.GetAvailablePermits"/>, or <paramref name="enough"/> when at least that many are
    /// available: a refill sizing its block needs no more, and the log counts its available permits by a binary search
    /// over its ring, where one slot tells whether <paramref name="enough"/> are free.
    /// </summary>
    long GetAvailableUpTo(ref TState state, long now, long enough);
}
