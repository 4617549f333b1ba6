namespace RateEngine.Timing;

/// <summary>How time moves for a limiter whose <c>AutoReplenishment</c> is off.</summary>
internal enum ManualReplenishment
{
    /// <summary>Automatic: time is the provider's clock.</summary>
    None,

    /// <summary>
    /// Time moves one tick (one window or segment) per <c>TryReplenish</c>, and only once a full period of the
    /// provider's time has passed since the last move: the in-box fixed and sliding windows' rule.
    /// </summary>
    Step,

    /// <summary>
    /// Time moves by the provider's time elapsed since the last credited <c>TryReplenish</c>; while the limiter is
    /// full nothing is credited and the elapsed time keeps accruing: the in-box token bucket's rule.
    /// </summary>
    Elapsed,
}
