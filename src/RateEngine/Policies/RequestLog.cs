using RateEngine.Algorithms;

namespace RateEngine.Policies;

/// <summary>
/// The sliding-window log as a policy layer's algorithm. The log keeps a slot per permit, so a policy uses it for request
/// counts only (<see cref="PolicyRule.Counting"/> refuses a weighted meter on it): it is never asked to charge an overrun
/// or to refund part of an admission, and those two throw.
/// </summary>
internal readonly struct RequestLog(SlidingWindowLog log) : IWeightedAlgorithm<LogState>
{
    public long PermitLimit => log.PermitLimit;

    public long RefillTicks => log.RefillTicks;

    public long RefundHorizon => long.MaxValue;

    public LogState CreateState() => log.CreateState();

    public LogState CreateState(long now) => log.CreateState(now);

    public bool TryAcquire(ref LogState state, long now, long permits, out Admission admission, out long retryAfter) =>
        log.TryAcquire(ref state, now, permits, out admission, out retryAfter);

    public bool Refund(ref LogState state, in Admission admission) => log.Refund(ref state, admission);

    public Admission Charge(ref LogState state, long now, long amount) =>
        throw new InvalidOperationException("A sliding-window log counts requests; it cannot take a weighted charge.");

    public bool Refund(ref LogState state, in Admission admission, long amount) => amount == admission.Permits
        ? log.Refund(ref state, admission)
        : throw new InvalidOperationException("A sliding-window log counts requests; it cannot refund part of one.");

    public long GetAvailablePermits(ref LogState state, long now) => log.GetAvailablePermits(ref state, now);

    public long GetRetryAfter(ref LogState state, long now, long permits) => log.GetRetryAfter(ref state, now, permits);

    public long? GetFullSince(ref LogState state, long now) => log.GetFullSince(ref state, now);

    public long GetUsed(ref LogState state, long now) => log.PermitLimit - log.GetAvailablePermits(ref state, now);

    /// <summary>Until the newest counted request leaves the window, when every permit is free again.</summary>
    public long GetResetAfter(ref LogState state, long now) =>
        GetUsed(ref state, now) == 0 ? 0 : log.GetRetryAfter(ref state, now, log.PermitLimit);
}
