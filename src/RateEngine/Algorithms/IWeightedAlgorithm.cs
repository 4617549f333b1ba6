namespace RateEngine.Algorithms;

/// <summary>
/// An algorithm that can count a budget: weighted amounts (tokens, micro-dollars) reserved as an estimate, then
/// reconciled with the actual amount by a partial refund or an overrun charge.
/// </summary>
/// <remarks>
/// The sliding-window log is not one: it keeps one slot per permit, so a weight of a million tokens would cost a million
/// slots. It stays for request counts.
/// </remarks>
/// <typeparam name="TState">The mutable per-limiter (or per-key) state.</typeparam>
internal interface IWeightedAlgorithm<TState> : IRateAlgorithm<TState>
{
    /// <summary>
    /// Counts <paramref name="amount"/> (at least 1, any size) at <paramref name="now"/> whatever the limit: an overrun that
    /// was already spent. Later requests are refused until the counted usage has come back below the limit. Returns the
    /// charge, which <see cref="Refund(ref TState, in Admission, long)"/> can undo like an admission.
    /// </summary>
    Admission Charge(ref TState state, long now, long amount);

    /// <summary>
    /// Gives back <paramref name="amount"/> (1..<c>admission.Permits</c>) of an admission or charge: exactly, while the period
    /// it was counted in still counts it; nothing once that period is over (the amount already came back with it), and
    /// nothing where the algorithm cannot undo it exactly (see each algorithm's refund rule). Returns true when the state no
    /// longer counts the amount (possibly in a period that is over but that nothing has replaced yet, as for
    /// <see cref="IRateAlgorithm{TState}.Refund"/>); false when nothing was undone.
    /// </summary>
    bool Refund(ref TState state, in Admission admission, long amount);

    /// <summary>
    /// The amount counted against the limit at <paramref name="now"/>: at most the limit, except after an overrun charge.
    /// </summary>
    long GetUsed(ref TState state, long now);

    /// <summary>
    /// Ticks from <paramref name="now"/> until everything counted at <paramref name="now"/> has come back (the end of a fixed
    /// or calendar period; the expiry of the newest segment; a full bucket); 0 when nothing is counted.
    /// </summary>
    long GetResetAfter(ref TState state, long now);
}
