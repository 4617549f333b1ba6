using System.Diagnostics;

namespace RateEngine.Algorithms;

/// <summary>
/// A cap on requests in flight: at most <c>PermitLimit</c> held at once, each given back when its holder is done.
/// </summary>
/// <remarks>
/// <para><b>State</b>: one word, the count held. <b>Invariant</b>: it equals the permits admitted and not yet refunded, and
/// admissions never take it above the limit. <b>Linearization point</b>: the CAS of the count.</para>
/// <para>Time plays no part: a permit comes back only by <see cref="Refund(ref long, in Admission)"/> (a lease's dispose),
/// always exactly, so there is no time after which a request could pass. <see cref="GetRetryAfter"/> therefore says
/// "unknown" with the smallest delay, and a policy reports no retry delay for this layer.</para>
/// </remarks>
internal readonly struct ConcurrencyLimit : IWeightedAlgorithm<long>
{
    private readonly long _limit;

    public ConcurrencyLimit(long permitLimit)
    {
        Debug.Assert(permitLimit is > 0 and <= int.MaxValue);
        _limit = permitLimit;
    }

    public long PermitLimit => _limit;

    /// <summary>Nothing refills with time; one tick keeps queue arithmetic finite.</summary>
    public long RefillTicks => 1;

    public long RefundHorizon => long.MaxValue;

    public long CreateState() => 0;

    public long CreateState(long now) => 0;

    public bool TryAcquire(ref long state, long now, long permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        while (true)
        {
            long held = Volatile.Read(ref state);
            if (held + permits > _limit)
            {
                admission = default;
                retryAfter = 1;
                return false;
            }

            if (Interlocked.CompareExchange(ref state, held + permits, held) == held)
            {
                admission = new Admission(now, permits, 0, held);
                retryAfter = 0;
                return true;
            }
        }
    }

    public Admission Charge(ref long state, long now, long amount)
    {
        long held = Interlocked.Add(ref state, amount) - amount;
        return new Admission(now, amount, 0, held);
    }

    /// <summary>Always exact: the permits were held until now, whatever else happened.</summary>
    public bool Refund(ref long state, in Admission admission) => Refund(ref state, admission, admission.Permits);

    public bool Refund(ref long state, in Admission admission, long amount)
    {
        long after = Interlocked.Add(ref state, -amount);
        Debug.Assert(after >= 0, "released more than was held");
        return true;
    }

    public long GetAvailablePermits(ref long state, long now) => Math.Max(0, _limit - Volatile.Read(ref state));

    public long GetRetryAfter(ref long state, long now, long permits) =>
        Volatile.Read(ref state) + permits <= _limit ? 0 : 1;

    public long? GetFullSince(ref long state, long now) => Volatile.Read(ref state) == 0 ? 0 : null;

    public long GetUsed(ref long state, long now) => Volatile.Read(ref state);

    /// <summary>Nothing comes back with time.</summary>
    public long GetResetAfter(ref long state, long now) => 0;
}
