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
/// <c>(burst - max(tat - u, 0)) / cost</c> tokens, where <c>burst = TokenLimit * cost</c>. A fresh bucket holds
/// <see cref="Fresh"/>, which reads as full at any time.</para>
/// <para><b>Invariant</b>: after every admission at time u, <c>tat - u &lt;= burst</c>, and each admission of n tokens
/// moves tat forward by exactly <c>n * cost</c> from <c>max(tat, u)</c>. For any interval [x, y] the admissions
/// stamped in it therefore satisfy <c>n_total * cost &lt;= (y - x) + burst</c>: at most burst + rate * T. This holds
/// even when stamps are not monotone in CAS order, so a slow thread deciding with an old clock read is safe.</para>
/// <para><b>Linearization point</b>: the CAS of tat.</para>
/// <para><b>Exactness</b>: with <c>p / q</c> the token interval in ticks in lowest terms, the units are <c>1/q</c> tick
/// and a token costs exactly <c>p</c> units whenever <c>p &lt;= 2^21</c> or <c>q = 1</c>, and the burst
/// <c>TokenLimit * p</c> fits 2^60 units (so nearly every request rate, and every rate whose tokens come a whole number of
/// ticks apart). Otherwise the units are chosen so that a token costs at least 2^20 units and its cost is rounded up:
/// the rate is lower than asked by less than 2^-20 (under one part in a million), never higher. The burst is always
/// exactly <c>TokenLimit</c> tokens.</para>
/// <para><b>Wrap-around</b>: units are 64-bit and wrap; only differences <c>d = tat - u</c> are read. Every admission
/// leaves <c>d &lt;= burst</c>, and the limiter's clock never goes backwards, so against a clock read taken after tat was
/// read, tat is never more than the burst ahead. The common readings need no second look: <c>0 &lt;= d &lt;= burst</c> is
/// tat ahead, <c>-2^62 &lt;= d &lt; 0</c> is a bucket that refilled recently. Anything else comes from a clock read older
/// than tat (a thread that stalled after reading the clock) or from a bucket idle so long that the units wrapped, so the
/// bucket reads the clock again, after tat, and decides on that: outside <c>[0, burst]</c> it has refilled. Two bounds
/// remain, both in units and both far off except at the fastest rates (the wrap period is 2^64 units: 8.6 s on a 1 GHz
/// clock at 2^31 units per tick, the most any option produces; 2.3 hours at 1 GiB/s; centuries for request rates). A
/// thread must not stall between its clock read and its CAS for 3/4 of a wrap period (6.4 s, 1.7 hours, centuries), or
/// its read can pass for a recent refill. And a bucket idle for more than a wrap period whose idle time falls within one
/// burst of a multiple of it reads as partly drained, by at most the burst: stricter, never looser, as likely as
/// burst / 2^64.</para>
/// </remarks>
internal readonly struct TokenBucket : IRateAlgorithm<long>
{
    /// <summary>An inexact token costs at least 2^(PrecisionBits - 1) units: a relative rate error below 2^-20.</summary>
    private const int PrecisionBits = 21;

    /// <summary>The largest burst in units: sums of a burst, a cost and a slack stay far from overflow.</summary>
    private const long MaxBurst = 1L << 60;

    /// <summary>The state of a bucket that has admitted nothing: full at any time. <c>next</c> never takes this value.</summary>
    private const long Fresh = long.MinValue;

    /// <summary>How far behind u a state may read as a recent refill without a second look at the clock.</summary>
    private const long RecentlyBehind = 1L << 62;

    private readonly long _limit;
    private readonly long _unitsPerTick;
    private readonly long _ticksPerUnit;
    private readonly long _cost;
    private readonly long _burst;
    private readonly LimiterClock _clock;

    /// <param name="tokenLimit">Bucket size.</param>
    /// <param name="tokensPerPeriod">Tokens added per period.</param>
    /// <param name="periodTicks">The period in clock ticks.</param>
    /// <param name="clock">The clock whose ticks <c>now</c> counts: read again when a state looks further ahead than a burst.</param>
    public TokenBucket(long tokenLimit, long tokensPerPeriod, long periodTicks, LimiterClock clock)
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
        _clock = clock;
    }

    /// <summary>The token limit.</summary>
    public long PermitLimit => _limit;

    public long RefillTicks => (long)Int128.Min(TimeMath.MaxTicks, _ticksPerUnit == 1
        ? ((_burst - 1) / _unitsPerTick) + 1
        : (Int128)_burst * _ticksPerUnit);

    /// <summary>The exact rate in tokens per tick, as the fraction this bucket refills at (for tests).</summary>
    internal (long Units, long Ticks, long Cost) Rate => (_unitsPerTick, _ticksPerUnit, _cost);

    public long CreateState() => Fresh;

    public bool TryAcquire(ref long state, long now, long permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        long asked = now;
        long u = ToUnits(now);
        long cost = permits * _cost;
        while (true)
        {
            long tat = Volatile.Read(ref state);
            long ahead = Ahead(tat, ref now, ref u);
            long needed = ahead + cost;
            if (needed > _burst)
            {
                admission = default;
                retryAfter = ToTicksCeiling(needed - _burst, now, u) + (now - asked);
                return false;
            }

            // Linearization point: tat moves by exactly this admission's cost from max(tat, u).
            long next = unchecked(u + needed);
            next = next == Fresh ? next + 1 : next; // one unit later, never the fresh marker
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
        long u = ToUnits(now);
        return (_burst - Ahead(Volatile.Read(ref state), ref now, ref u)) / _cost;
    }

    public long GetRetryAfter(ref long state, long now, long permits)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        long asked = now;
        long u = ToUnits(now);
        long excess = Ahead(Volatile.Read(ref state), ref now, ref u) + (permits * _cost) - _burst;
        return excess <= 0 ? 0 : ToTicksCeiling(excess, now, u) + (now - asked);
    }

    public long? GetFullSince(ref long state, long now)
    {
        long u = ToUnits(now);
        long tat = Volatile.Read(ref state);
        if (tat == Fresh)
        {
            return 0;
        }

        if (Ahead(tat, ref now, ref u) > 0)
        {
            return null;
        }

        // Full since tat, or (if tat has wrapped behind u) since longer ago than this can tell: as far back as it can.
        ulong behind = unchecked((ulong)(u - tat));
        long unitTicks = Stamp(now, u);
        long behindTicks = (long)UInt128.Min((UInt128)behind / (ulong)_unitsPerTick * (ulong)_ticksPerUnit, (ulong)unitTicks);
        return unitTicks - behindTicks;
    }

    private long ToUnits(long now) => _ticksPerUnit == 1 ? unchecked(now * _unitsPerTick) : now / _ticksPerUnit;

    /// <summary>
    /// How far tat is ahead of u (0 when the bucket is full). A state further ahead than the burst, or far behind, is
    /// read against the clock again, after tat was read (see remarks: wrap-around); <paramref name="now"/> and
    /// <paramref name="u"/> then move to that later time, which the caller decides at.
    /// </summary>
    private long Ahead(long tat, ref long now, ref long u)
    {
        if (tat == Fresh)
        {
            return 0;
        }

        long difference = unchecked(tat - u);
        if ((ulong)difference <= (ulong)_burst)
        {
            return difference;
        }

        if (difference is < 0 and >= -RecentlyBehind)
        {
            return 0;
        }

        // A stale read or a wrapped state: look again. Max: a caller's time is never later than the clock's, except in
        // tests that pass times of their own.
        now = Math.Max(now, _clock.Now());
        u = ToUnits(now);
        difference = unchecked(tat - u);
        return (ulong)difference <= (ulong)_burst ? difference : 0;
    }

    /// <summary>The decision's time in clock ticks: the clock read, rounded down to a unit when units are coarser.</summary>
    private long Stamp(long now, long u) => _ticksPerUnit == 1 ? now : u * _ticksPerUnit;

    /// <summary>
    /// Ticks from <paramref name="now"/> until <paramref name="units"/> more units have passed after <paramref name="u"/>,
    /// rounded up (waiting that long is enough), saturated at <see cref="TimeMath.MaxTicks"/>. With coarse units the
    /// part of the current unit already elapsed counts.
    /// </summary>
    private long ToTicksCeiling(long units, long now, long u)
    {
        if (_ticksPerUnit == 1)
        {
            return ((units - 1) / _unitsPerTick) + 1;
        }

        Int128 ticks = ((Int128)units * _ticksPerUnit) - (now - (u * _ticksPerUnit));
        return ticks > TimeMath.MaxTicks ? TimeMath.MaxTicks : (long)Int128.Max(1, ticks);
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
