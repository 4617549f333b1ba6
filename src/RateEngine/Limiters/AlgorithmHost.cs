using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Limiters;

/// <summary>
/// One algorithm bound to one state: what <see cref="RateEngineLimiter"/> drives. The generic subclass lets the JIT
/// specialize each algorithm (a struct), so the only indirection on the hot path is this class's virtual call.
/// </summary>
internal abstract class AlgorithmHost
{
    public abstract long PermitLimit { get; }

    public abstract long RefillTicks { get; }

    public abstract bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter);

    /// <summary>Undoes an admission (see <see cref="IRateAlgorithm{TState}.Refund"/>); <paramref name="now"/> is a fresh clock read.</summary>
    public abstract bool Refund(in Admission admission, long now);

    public abstract long GetAvailablePermits(long now);

    public abstract long GetRetryAfter(long now, long permits);

    public abstract long? GetFullSince(long now);

    /// <summary>
    /// Ticks until <paramref name="permits"/> could have passed, for any count, even beyond the limit (a request behind
    /// queued ones): the first <c>permits mod limit</c> when the algorithm says, then one more limit per refill.
    /// </summary>
    /// <remarks>
    /// Beyond the limit there are waiters ahead, and they go first and whole: the head is waiting because it needs more than
    /// is free now, so the first limit's worth passes no sooner than one permit more than is free would. (Permits free now
    /// cannot be counted as the first part: the head does not take them, and nobody behind it may.)
    /// </remarks>
    public long GetRetryAfterBehind(long now, long permits)
    {
        long limit = PermitLimit;
        if (permits <= limit)
        {
            return GetRetryAfter(now, permits);
        }

        long refills = (permits - 1) / limit;
        long first = Math.Min(limit, Math.Max(permits - (refills * limit), GetAvailablePermits(now) + 1));
        Int128 ticks = GetRetryAfter(now, first) + ((Int128)refills * RefillTicks);
        return ticks > TimeMath.MaxTicks ? TimeMath.MaxTicks : (long)ticks;
    }
}
