namespace RateEngine.Algorithms;

/// <summary>
/// What an algorithm needs to undo one admission, plus the decision's timestamp.
/// </summary>
/// <param name="Stamp">
/// The decision's time in clock ticks. It lies between the caller's clock read and the linearization point,
/// and it is the time the guarantee is stated for (the stress tests check admissions by it).
/// </param>
/// <param name="Permits">The permits admitted.</param>
/// <param name="Marker">Where the permits were taken: a log ticket, a window or segment epoch, a bucket position.</param>
/// <param name="Previous">
/// The state word before the admission, where an exact undo needs it; for per-core blocks, the stripe that served it
/// (its refund goes back there, and its success is counted there).
/// </param>
internal readonly record struct Admission(long Stamp, long Permits, long Marker, long Previous)
{
    /// <summary>
    /// Whether a refund at <paramref name="now"/> may still free something: the admission is younger than the algorithm's
    /// <see cref="IRateAlgorithm{TState}.RefundHorizon"/> (past it, its permits are back, and an epoch compared modulo 2^33
    /// could match a later period's).
    /// </summary>
    public bool IsRefundableAt(long now, long horizon) => now - Stamp < horizon;
}
