using System.Diagnostics;
using RateEngine.Timing;

namespace RateEngine.Algorithms;

/// <summary>
/// The sliding-window log as seen by per-core blocks (<c>Limiters/StripedHost</c>): the exact log of window
/// <c>W + 2(D - 1)</c>, whose admissions are counted in aligned block periods of D ticks, so that permits a refill took
/// in one admission may be used by the core's later requests until that period ends.
/// </summary>
/// <remarks>
/// <para><b>Why the longer window</b>: the log's guarantee is per ticket chain. Ticket k and ticket k + L (the next one in
/// slot k mod L) are decided at stamps at least the log's window apart; a permit from a block is used at a time stamped
/// in its decision's period, so within D - 1 ticks of that decision, before or after it. Two uses can therefore be
/// 2(D - 1) closer than their decisions, and a log of window W + 2(D - 1) keeps the uses of each chain at least W apart:
/// any interval of length W holds at most one use per chain, at most L in all. The guarantee holds for use times.</para>
/// <para><b>What it costs</b>: the log counts each permit 2(D - 1) ticks longer than W, so its steady rate is
/// <c>L / (W + 2(D - 1))</c>: with D = W / 256 about 0.8 % below <c>L / W</c>. Permits a block still holds when its period
/// ends stay in the log, counted until they leave the longer window, as any other admission. (With blocks of one permit
/// the limiter uses the plain log, not this.)</para>
/// <para><b>Linearization point</b>: the log's.</para>
/// </remarks>
internal readonly struct BlockPeriodLog : IPeriodBlockAlgorithm<LogState>
{
    /// <summary>A block period is this fraction of the window (at least one tick).</summary>
    internal const long PeriodsPerWindow = 256;

    private readonly SlidingWindowLog _log;
    private readonly long _period;

    /// <param name="permitLimit">L.</param>
    /// <param name="windowTicks">W, the window of the guarantee.</param>
    public BlockPeriodLog(int permitLimit, long windowTicks)
    {
        Debug.Assert(permitLimit > 0 && windowTicks > 0);
        _period = Math.Max(1, windowTicks / PeriodsPerWindow);
        // Capped as every window is: a never-used slot's stamp is expired only for windows up to TimeMath.MaxTicks.
        _log = new SlidingWindowLog(permitLimit, Math.Min(TimeMath.MaxTicks, windowTicks + (2 * (_period - 1))));
    }

    public long PermitLimit => _log.PermitLimit;

    public long RefillTicks => _log.RefillTicks;

    public long RefundHorizon => long.MaxValue;

    public long PeriodTicks => _period;

    /// <summary>Always: a permit of any period stays in the log for the whole counted span, so handing it out again in its period is safe.</summary>
    public bool CountsPeriod(ref LogState state, long epoch) => true;

    public LogState CreateState() => _log.CreateState();

    public LogState CreateState(long now) => _log.CreateState(now);

    /// <summary>The log's decision; the admission's marker is the period of its stamp, where its permits may be used.</summary>
    public bool TryAcquire(ref LogState state, long now, long permits, out Admission admission, out long retryAfter)
    {
        if (!_log.TryAcquire(ref state, now, permits, out admission, out retryAfter))
        {
            return false;
        }

        admission = admission with { Marker = admission.Stamp / _period };
        return true;
    }

    /// <summary>Nothing goes back to the log: the blocks take refunds (and a slot in the middle of the ring cannot be freed).</summary>
    public bool Refund(ref LogState state, in Admission admission) => false;

    public long GetAvailablePermits(ref LogState state, long now) => _log.GetAvailablePermits(ref state, now);

    /// <summary>One slot read when the ring has room for <paramref name="enough"/>; the binary search only near the cap.</summary>
    public long GetAvailableUpTo(ref LogState state, long now, long enough) =>
        enough <= _log.PermitLimit && _log.GetRetryAfter(ref state, now, enough) == 0
            ? enough
            : Math.Min(_log.GetAvailablePermits(ref state, now), enough);

    public long GetRetryAfter(ref LogState state, long now, long permits) => _log.GetRetryAfter(ref state, now, permits);

    public long? GetFullSince(ref LogState state, long now) => _log.GetFullSince(ref state, now);
}
