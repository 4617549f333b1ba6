using System.Diagnostics;
using RateEngine.Timing;

namespace RateEngine.Algorithms;

/// <summary>
/// Token bucket as the generic cell rate algorithm (GCRA): <c>TokenLimit</c> tokens of burst, refilled at
/// <c>TokensPerPeriod</c> per period, kept in a single word.
/// </summary>
/// <remarks>
/// <para><b>State</b>: the theoretical arrival time <c>tat</c>, in units of <c>1 / unitsPerTick</c> clock ticks (or of
/// <c>ticksPerUnit</c> ticks for very slow buckets) in which one token costs <c>cost</c> units. At time u the bucket holds
/// <c>(burst - max(tat - u, 0)) / cost</c> tokens, where <c>burst = TokenLimit * cost</c>; a fresh bucket (<c>tat = 0</c>)
/// is full.</para>
/// <para><b>Invariant</b>: after every admission at time u, <c>tat - u &lt;= burst</c>, and each admission of n tokens
/// moves tat forward by exactly <c>n * cost</c> from <c>max(tat, u)</c>. For any interval [x, y] the admissions
/// stamped in it therefore satisfy <c>n_total * cost &lt;= (y - x) + burst</c>: at most burst + rate * T. This holds
/// even when stamps are not monotone in CAS order, so a slow thread deciding with an old clock read is safe.</para>
/// <para><b>Linearization point</b>: the CAS of tat.</para>
/// <para><b>Exactness</b>: with <c>p / q</c> the token interval in ticks in lowest terms, the units are <c>1/q</c> tick
/// and a token costs exactly <c>p</c> units whenever <c>p &lt;= 2^21</c> or <c>q = 1</c> (so every request rate and every
/// rate whose tokens come a whole number of ticks apart). Otherwise the units are chosen so that a token costs at least
/// 2^20 units and its cost is rounded up: the rate is lower than asked by less than 2^-20 (under one part in a
/// million), never higher. The burst is always exactly <c>TokenLimit</c> tokens.</para>
/// <para><b>Wrap-around</b>: units are 64-bit and wrap; only differences <c>tat - u</c> are used. A difference of up to
/// <c>burst + slack</c> (slack = 2^58 units) reads as tat ahead of u (a caller whose clock read is stale, which then
/// decides at <c>tat - burst</c>); anything else reads as tat behind u, a bucket that has refilled. The limiter's clock
/// never goes backwards, so tat is ahead of a fresh clock read by at most the burst. Two bounds follow. A thread must
/// not stall between its clock read and its CAS for longer than the slack (134 ms at 2^31 units per tick, the most any
/// option produces; years for request rates), or its old read can pass for a refilled bucket. And a bucket left idle
/// for more than one wrap period (2^64 units: 8.6 s at 2^31 units per tick, 2.3 hours at 1 GiB/s, centuries for request
/// rates) reads as partly drained, for at most <c>burst + slack</c>, when its idle time falls within that much of a
/// multiple of the period: stricter, never looser.</para>
/// </remarks>
internal readonly struct TokenBucket : IRateAlgorithm<long>
{
    /// <summary>An inexact token costs at least 2^(PrecisionBits - 1) units: a relative rate error below 2^-20.</summary>
    private const int PrecisionBits = 21;

    /// <summary>The largest burst in units: sums of a burst, a cost and a slack stay far from overflow.</summary>
    private const long MaxBurst = 1L << 60;

    private const long Slack = 1L << 58;

    private readonly long _limit;
    private readonly long _unitsPerTick;
    private readonly long _ticksPerUnit;
    private readonly long _cost;
    private readonly long _burst;
    private readonly ulong _maxAhead;

    /// <param name="tokenLimit">Bucket size.</param>
    /// <param name="tokensPerPeriod">Tokens added per period.</param>
    /// <param name="periodTicks">The period in clock ticks.</param>
    public TokenBucket(long tokenLimit, long tokensPerPeriod, long periodTicks)
    {
        Debug.Assert(tokenLimit is > 0 and <= int.MaxValue);
        Debug.Assert(tokensPerPeriod > 0 && periodTicks > 0);
        _limit = tokenLimit;

        long gcd = GreatestCommonDivisor(periodTicks, tokensPerPeriod);
        long p = periodTicks / gcd;
        long q = tokensPerPeriod / gcd;
        if ((p <= 1L << PrecisionBits || q == 1) && (Int128)tokenLimit * p <= MaxBurst)
        {
            // Exact: units of 1/q tick, a token costs p of them.
            _unitsPerTick = q;
            _ticksPerUnit = 1;
            _cost = p;
        }
        else
        {
            // Aim at a cost of 2^PrecisionBits units per token; round the cost up, so the rate is never above the asked one.
            const long Target = 1L << PrecisionBits;
            Int128 unitsPerTick = (Int128)Target * q / p;
            if (unitsPerTick >= 1)
            {
                _unitsPerTick = (long)unitsPerTick;
                _ticksPerUnit = 1;
                _cost = (long)(((Int128)p * _unitsPerTick + q - 1) / q);
            }
            else
            {
                _unitsPerTick = 1;
                _ticksPerUnit = (long)((Int128)p / ((Int128)Target * q));
                _cost = (long)(((Int128)p + ((Int128)q * _ticksPerUnit) - 1) / ((Int128)q * _ticksPerUnit));
            }
        }

        Debug.Assert(_unitsPerTick == 1 || _ticksPerUnit == 1);
        _burst = tokenLimit * _cost;
        Debug.Assert(_burst <= MaxBurst);
        _maxAhead = (ulong)(_burst + Slack);
    }

    /// <summary>The token limit.</summary>
    public long PermitLimit => _limit;

    public long RefillTicks => ToTicksCeiling(_burst);

    /// <summary>The exact rate in tokens per tick, as the fraction this bucket refills at (for tests).</summary>
    internal (long Units, long Ticks, long Cost) Rate => (_unitsPerTick, _ticksPerUnit, _cost);

    public long CreateState() => 0;

    public bool TryAcquire(ref long state, long now, int permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        long u = ToUnits(now);
        long cost = permits * _cost;
        while (true)
        {
            long tat = Volatile.Read(ref state);

            // How far tat is ahead of u; beyond the burst only for a stale clock read, which decides at tat - burst.
            long ahead = Ahead(tat, u);
            long needed = ahead + cost;
            if (needed > _burst)
            {
                admission = default;
                retryAfter = ToTicksCeiling(needed - _burst);
                return false;
            }

            // Linearization point: tat moves by exactly this admission's cost from max(tat, u).
            long next = unchecked(u + needed);
            if (Interlocked.CompareExchange(ref state, next, tat) == tat)
            {
                admission = new Admission(Stamp(now, u), permits, next, tat);
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
        long ahead = Math.Min(Ahead(Volatile.Read(ref state), ToUnits(now)), _burst);
        return (_burst - ahead) / _cost;
    }

    /// <remarks>
    /// <paramref name="permits"/> may exceed the limit (a request behind queued ones): the bucket then has to refill more
    /// than once, and the answer is when the refill since now has covered them all, taken as they came.
    /// </remarks>
    public long GetRetryAfter(ref long state, long now, long permits)
    {
        long ahead = Ahead(Volatile.Read(ref state), ToUnits(now));
        Int128 excess = ahead + ((Int128)permits * _cost) - _burst;
        return excess <= 0 ? 0 : ToTicksCeiling(excess);
    }

    public long? GetFullSince(ref long state, long now)
    {
        long u = ToUnits(now);
        long tat = Volatile.Read(ref state);
        if (Ahead(tat, u) > 0)
        {
            return null;
        }

        // Full since tat (or, if tat has wrapped behind u, since longer ago than this can tell: as far back as it can).
        ulong behind = unchecked((ulong)(u - tat));
        long behindTicks = (long)UInt128.Min((UInt128)behind / (ulong)_unitsPerTick * (ulong)_ticksPerUnit, (ulong)now);
        return now - behindTicks;
    }

    private long ToUnits(long now) => _ticksPerUnit == 1 ? unchecked(now * _unitsPerTick) : now / _ticksPerUnit;

    /// <summary>tat - u when it reads as ahead (see remarks: wrap-around); 0 when tat is behind u.</summary>
    private long Ahead(long tat, long u)
    {
        long difference = unchecked(tat - u);
        return (ulong)difference <= _maxAhead ? difference : 0;
    }

    /// <summary>The decision's time in clock ticks: the clock read, rounded down to a unit when units are coarser.</summary>
    private long Stamp(long now, long u) => _ticksPerUnit == 1 ? now : u * _ticksPerUnit;

    /// <summary>Units to ticks, rounded up (waiting that long is enough): the reject path's conversion.</summary>
    private long ToTicksCeiling(long units) =>
        _ticksPerUnit == 1 ? ((units - 1) / _unitsPerTick) + 1 : ToTicksCeiling((Int128)units);

    /// <summary>Units to ticks, rounded up, saturated at <see cref="TimeMath.MaxTicks"/>.</summary>
    private long ToTicksCeiling(Int128 units)
    {
        Int128 ticks = _ticksPerUnit == 1 ? (units + _unitsPerTick - 1) / _unitsPerTick : units * _ticksPerUnit;
        return ticks > TimeMath.MaxTicks ? TimeMath.MaxTicks : (long)ticks;
    }

    private static long GreatestCommonDivisor(long a, long b)
    {
        while (b != 0)
        {
            (a, b) = (b, a % b);
        }

        return a;
    }
}
