namespace RateEngine.Algorithms;

/// <summary>
/// One rate-limiting state machine: given its state, the time and a permit count, it decides.
/// It knows nothing of queues, leases, keys or the BCL contract; that plumbing lives in <c>Limiters/</c>.
/// </summary>
/// <remarks>
/// The algorithm object holds only immutable configuration, so one instance serves any number of states
/// (one per partition key). All methods are thread-safe and lock-free with respect to <typeparamref name="TState"/>.
/// Times are the non-negative ticks of <see cref="Timing.LimiterClock"/>; windows are in the same ticks.
/// </remarks>
/// <typeparam name="TState">The mutable per-limiter (or per-key) state.</typeparam>
internal interface IRateAlgorithm<TState>
{
    /// <summary>The most permits that can ever be admitted at once.</summary>
    long PermitLimit { get; }

    /// <summary>
    /// Ticks after which <see cref="PermitLimit"/> permits taken at once are all back: how much later each further
    /// limit's worth of a long queue can pass (see <c>AlgorithmHost.GetRetryAfterBehind</c>).
    /// </summary>
    long RefillTicks { get; }

    /// <summary>
    /// Ticks after an admission's stamp from which refunding it frees nothing that still counts: a host holding the time
    /// skips such a refund. <see cref="long.MaxValue"/> where the refund tells an old admission from a current one by
    /// itself (tickets, period objects, markers); the window where it compares epochs modulo 2^33, and would take an
    /// admission 2^33 windows old for one of the current window.
    /// </summary>
    long RefundHorizon { get; }

    /// <summary>Creates the state of a limiter that has admitted nothing yet.</summary>
    TState CreateState();

    /// <summary>
    /// <see cref="CreateState()"/> for a key created at <paramref name="now"/>, long after the clock began (a partition
    /// key, a policy cell): the state counts from now's window. A state of window 0 would be read as a window ahead of
    /// now once 2^33 windows have passed (epochs wrap), and decide every request up to 2^20 windows in the future.
    /// </summary>
    TState CreateState(long now);

    /// <summary>
    /// Admits <paramref name="permits"/> (1..<see cref="PermitLimit"/>) at <paramref name="now"/> if the guarantee allows.
    /// On success <paramref name="admission"/> identifies the admission for <see cref="Refund"/>; on failure
    /// <paramref name="retryAfter"/> is the number of ticks until the same request would be admitted.
    /// </summary>
    bool TryAcquire(ref TState state, long now, long permits, out Admission admission, out long retryAfter);

    /// <summary>
    /// Undoes an admission made by <see cref="TryAcquire"/>. Never frees more than the admission took and never
    /// frees a permit whose window has passed. Returns true when the state no longer counts the admission; false when
    /// nothing was undone (the admission can no longer be undone exactly, or has aged out and the state moved on), in
    /// which case keeping it counted is the safe choice. An admission whose window has passed in a state nothing has
    /// touched since may be undone there and reported true: that frees nothing any decision can use, and a caller that
    /// stops counting it counts nothing that still counts.
    /// </summary>
    bool Refund(ref TState state, in Admission admission);

    /// <summary>Permits that a request could take at <paramref name="now"/> (ignoring any queue).</summary>
    long GetAvailablePermits(ref TState state, long now);

    /// <summary>
    /// Ticks from <paramref name="now"/> until <paramref name="permits"/> (1..<see cref="PermitLimit"/>) would be
    /// available, assuming no other admissions; 0 when they are available now. At least 1 when they are not.
    /// </summary>
    long GetRetryAfter(ref TState state, long now, long permits);

    /// <summary>
    /// When the state is indistinguishable from a fresh one (every permit replenished), the time since which it
    /// has been so; otherwise null.
    /// </summary>
    long? GetFullSince(ref TState state, long now);
}
