using System.Diagnostics;
using RateEngine.Timing;

namespace RateEngine.Algorithms;

/// <summary>
/// Token bucket as the generic cell rate algorithm (GCRA): <c>TokenLimit</c> tokens of burst, refilled at
/// <c>TokensPerPeriod</c> per period, kept in a single word.
/// </summary>
/// <remarks>
/// <para><b>State</b>: the theoretical arrival time <c>tat</c>, in scaled units <c>u = ticks * scale</c> in which one
/// token costs <c>cost</c> units. The bucket holds <c>(u + burst - max(tat, u)) / cost</c> tokens, where
/// <c>burst = TokenLimit * cost</c>; a fresh bucket (<c>tat = 0</c>) is full.</para>
/// <para><b>Invariant</b>: after every admission at time u, <c>tat &lt;= u + burst</c>, and each admission of n tokens
/// moves tat forward by exactly <c>n * cost</c> from <c>max(tat, u)</c>. For any interval [x, y] the admissions
/// stamped in it therefore satisfy <c>n_total * cost &lt;= (y - x) + burst</c>: at most burst + rate * T. This holds
/// even when stamps are not monotone in CAS order, so a slow thread deciding with an old clock read is safe.</para>
/// <para><b>Linearization point</b>: the CAS of tat.</para>
/// <para><b>Exactness</b>: with <c>g = gcd(period, TokensPerPeriod)</c> the rate is exact when
/// <c>TokensPerPeriod / g</c> fits the scale budget (always in manual mode, and for every rate whose token interval is a
/// whole number of clock ticks). Otherwise the token interval is rounded up to a multiple of 1/scale tick: the rate is
/// lower by less than one part in <c>cost</c>, never higher.</para>
/// </remarks>
internal readonly struct TokenBucket : IRateAlgorithm<long>
{
    private readonly long _limit;
    private readonly long _scale;
    private readonly long _cost;
    private readonly long _burst;
    private readonly long _maxNow;
    private readonly long _maxPermits;

    /// <param name="tokenLimit">Bucket size.</param>
    /// <param name="tokensPerPeriod">Tokens added per period.</param>
    /// <param name="periodTicks">The period in clock ticks (1 in manual mode).</param>
    /// <param name="horizonTicks">The largest clock value the bucket represents exactly; later times saturate (stricter).</param>
    public TokenBucket(long tokenLimit, long tokensPerPeriod, long periodTicks, long horizonTicks)
    {
        Debug.Assert(tokenLimit is > 0 and <= int.MaxValue);
        Debug.Assert(tokensPerPeriod > 0 && periodTicks > 0 && horizonTicks > 0);
        _limit = tokenLimit;

        long gcd = GreatestCommonDivisor(periodTicks, tokensPerPeriod);
        long exactScale = tokensPerPeriod / gcd;
        long maxScale = Math.Max(1, TimeMath.MaxTicks / horizonTicks);
        if (exactScale <= maxScale)
        {
            _scale = exactScale;
            _cost = periodTicks / gcd;
        }
        else
        {
            // Round the token interval up: the bucket may refill a hair slower than asked, never faster.
            _scale = maxScale;
            Int128 scaledPeriod = (Int128)periodTicks * maxScale;
            _cost = (long)Int128.Max(1, (scaledPeriod + tokensPerPeriod - 1) / tokensPerPeriod);
        }

        _burst = (long)Int128.Min(TimeMath.MaxTicks, (Int128)tokenLimit * _cost);
        _maxNow = TimeMath.MaxTicks / _scale;

        // Below the limit only when the burst saturated (a bucket that takes decades to fill): larger requests never fit.
        _maxPermits = _burst / _cost;
    }

    /// <summary>The token limit, or fewer when the burst saturated (a bucket that takes decades to fill).</summary>
    public long PermitLimit => Math.Min(_limit, _maxPermits);

    public long CreateState() => 0;

    public bool TryAcquire(ref long state, long now, int permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        long u = ToUnits(now);
        if (permits > _maxPermits)
        {
            admission = default;
            retryAfter = CeilingDivide(_burst, _scale);
            return false;
        }

        long cost = permits * _cost;
        while (true)
        {
            long tat = Volatile.Read(ref state);

            // A clock that went backwards reads as no earlier than the last admission's own horizon.
            long t = Math.Max(u, tat - _burst);
            long next = Math.Max(tat, t) + cost;
            if (next - t > _burst)
            {
                admission = default;
                retryAfter = CeilingDivide(next - _burst - u, _scale);
                return false;
            }

            // Linearization point: tat moves by exactly this admission's cost.
            if (Interlocked.CompareExchange(ref state, next, tat) == tat)
            {
                admission = new Admission(t / _scale, permits, next, tat);
                retryAfter = 0;
                return true;
            }
        }
    }

    /// <summary>
    /// Exact only while no one has admitted since: tat is put back to where it was. Once another admission moved tat,
    /// the bucket may also have refilled in between (tat jumped to u), and subtracting our cost could free tokens that
    /// were never ours; the tokens stay spent instead.
    /// </summary>
    public bool Refund(ref long state, in Admission admission) =>
        Interlocked.CompareExchange(ref state, admission.Previous, admission.Marker) == admission.Marker;

    public long GetAvailablePermits(ref long state, long now)
    {
        long u = ToUnits(now);
        long tat = Volatile.Read(ref state);
        long t = Math.Max(u, tat - _burst);
        return Math.Min(_limit, (t + _burst - Math.Max(tat, t)) / _cost);
    }

    public long GetRetryAfter(ref long state, long now, long permits)
    {
        long u = ToUnits(now);
        long tat = Volatile.Read(ref state);
        long t = Math.Max(u, tat - _burst);
        if (permits > _maxPermits)
        {
            return CeilingDivide(_burst, _scale);
        }

        long excess = Math.Max(tat, t) + permits * _cost - t - _burst;
        return excess <= 0 ? 0 : CeilingDivide(excess + (t - u), _scale);
    }

    public long? GetFullSince(ref long state, long now)
    {
        long tat = Volatile.Read(ref state);
        return tat <= ToUnits(now) ? CeilingDivide(tat, _scale) : null;
    }

    private long ToUnits(long now) => (now < _maxNow ? now : _maxNow) * _scale;

    private static long CeilingDivide(long value, long divisor) => (value + divisor - 1) / divisor;

    private static long GreatestCommonDivisor(long a, long b)
    {
        while (b != 0)
        {
            (a, b) = (b, a % b);
        }

        return a;
    }
}
