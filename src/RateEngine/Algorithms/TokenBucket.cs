using System.Diagnostics;
using System.Runtime.CompilerServices;
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
/// moves tat forward by exactly <c>n * cost</c> from <c>max(tat, u)</c> (from <c>u + lead</c>, if later, for
/// <see cref="TryAcquireAhead"/>: the slots in between stay unused). For any interval [x, y] the admissions stamped in
/// it therefore satisfy <c>n_total * cost &lt;= (y - x) + burst</c>: at most burst + rate * T. This holds even when
/// stamps are not monotone in CAS order, so a slow thread deciding with an old clock read is safe.</para>
/// <para><b>Charge</b> (an overrun already spent) moves tat by <c>amount * cost</c> from <c>max(tat, u)</c> like an
/// admission, but past the burst: the bucket is in debt, holds no tokens, and refuses until tat - u is back within the
/// burst less the request. The debt is kept exactly up to <see cref="MaxDebt"/> (2^61 units past the burst, so
/// <c>tat - u &lt;= burst + 2^61 &lt; 2^62</c> always); a charge that would go further is clamped, in whole tokens, and
/// its admission reports the tokens that were counted. With charges counted as admissions the interval bound above
/// holds for every interval that ends at an admission: charges count as usage, and only they exceed it.</para>
/// <para><b>Refund</b> (whole or partial) is exact only while no one has changed the state since (it still equals the
/// admission's marker): a whole refund puts tat back where it was, a partial one moves it back by <c>amount * cost</c>,
/// as if <c>amount</c> fewer tokens had been admitted at the same time. Otherwise the tokens stay spent.</para>
/// <para><b>Linearization point</b>: the CAS of tat.</para>
/// <para><b>Exactness</b>: with <c>p / q</c> the token interval in ticks in lowest terms, the units are <c>1/q</c> tick
/// and a token costs exactly <c>p</c> units whenever <c>p &lt;= 2^21</c> or <c>q = 1</c>, and the burst
/// <c>TokenLimit * p</c> fits 2^60 units (so nearly every request rate, and every rate whose tokens come a whole number of
/// ticks apart). Otherwise the units are chosen so that a token costs at least 2^20 units and its cost is rounded up:
/// the rate is lower than asked by less than 2^-20 (under one part in a million), never higher. The burst is always
/// exactly <c>TokenLimit</c> tokens.</para>
/// <para><b>Wrap-around</b>: units are 64-bit and wrap; only differences <c>d = tat - u</c> are read. Every write leaves
/// <c>d &lt;= A</c>, with <c>A = burst + MaxDebt &lt;= 2^60 + 2^61</c> for a bucket that takes charges (a policy layer's)
/// and <c>A = burst + 1</c> for any other (<c>d &lt;= burst + 1</c> after an admission: one that would land on the fresh
/// marker moves one unit on), and the
/// limiter's clock never goes backwards, so against a clock read taken after tat was read, tat is never more than A
/// ahead. The common readings need no second look: <c>0 &lt;= d &lt;= burst</c> is tat ahead, <c>-2^62 &lt;= d &lt; 0</c>
/// is a bucket that refilled recently. Anything else is a bucket in debt, or comes from a clock read older than tat (a
/// thread that stalled after reading the clock) or from a bucket idle so long that the units wrapped, so the bucket reads
/// the clock again, after tat, and decides on that: <c>0 &lt;= d &lt;= A</c> is tat ahead (in debt past the burst),
/// anything else has refilled. Only a bucket in debt pays the second clock read; a bucket that never took a charge reads
/// as before. Two bounds remain, both in units and both far off except at the fastest rates (the wrap period is 2^64
/// units: 8.6 s on a 1 GHz clock at 2^31 units per tick, the most any option produces; 2.3 hours at 1 GiB/s; centuries
/// for request rates). A thread must not stall between its clock read and its CAS for <c>2^64 - 2^62 - A</c> units (3/4
/// of a wrap period for a limiter's bucket; 9/16 for a policy layer's, whose debt range is what it gave up: 4.8 s,
/// 1.3 hours, centuries), or its read can pass for a recent refill. And a bucket idle for more than a wrap period whose
/// idle time falls within A of a multiple of it reads as drained by at most a burst (a limiter's), or in debt by up to
/// 2^61 units (a policy layer's: 1 s at the fastest option, 18 minutes at 1 GiB/s, centuries for request rates; a key idle
/// that long is usually evicted first): stricter, never looser, as likely as A / 2^64 (at most 3/16) for a bucket idle
/// across a wrap.</para>
/// </remarks>
internal readonly struct TokenBucket : IWeightedAlgorithm<long>
{
    /// <summary>An inexact token costs at least 2^(PrecisionBits - 1) units: a relative rate error below 2^-20.</summary>
    private const int PrecisionBits = 21;

    /// <summary>The largest burst in units: sums of a burst, a cost and a slack stay far from overflow.</summary>
    private const long MaxBurst = 1L << 60;

    /// <summary>The state of a bucket that has admitted nothing: full at any time. <c>next</c> never takes this value.</summary>
    private const long Fresh = long.MinValue;

    /// <summary>How far behind u a state may read as a recent refill without a second look at the clock.</summary>
    private const long RecentlyBehind = 1L << 62;

    /// <summary>The most debt (units past the burst) a charge leaves; a larger charge is clamped to it.</summary>
    private const long MaxDebt = 1L << 61;

    private readonly long _limit;
    private readonly long _unitsPerTick;
    private readonly long _ticksPerUnit;
    private readonly long _cost;
    private readonly long _burst;
    private readonly long _maxAhead;
    private readonly LimiterClock _clock;

    /// <param name="tokenLimit">Bucket size.</param>
    /// <param name="tokensPerPeriod">Tokens added per period.</param>
    /// <param name="periodTicks">The period in clock ticks.</param>
    /// <param name="clock">The clock whose ticks <c>now</c> counts: read again when a state looks further ahead than a burst.</param>
    /// <param name="takesCharges">
    /// Whether <see cref="Charge"/> may leave debt (a policy layer's bucket). Only such a bucket reads a state up to
    /// <see cref="MaxDebt"/> past the burst as debt; any other reads it as refilled, so a bucket idle across a wrap of its
    /// units is not taken for one in debt and refused (1/8 of such idle times would be, for up to 2^61 units).
    /// </param>
    public TokenBucket(long tokenLimit, long tokensPerPeriod, long periodTicks, LimiterClock clock, bool takesCharges = false)
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
        _maxAhead = takesCharges ? _burst + MaxDebt : _burst + 1; // + 1: an admission that lands on the fresh marker moves one unit on
        _clock = clock;
    }

    /// <summary>The token limit.</summary>
    public long PermitLimit => _limit;

    public long RefillTicks => (long)Int128.Min(TimeMath.MaxTicks, _ticksPerUnit == 1
        ? ((_burst - 1) / _unitsPerTick) + 1
        : (Int128)_burst * _ticksPerUnit);

    public long RefundHorizon => long.MaxValue;

    /// <summary>The exact rate in tokens per tick, as the fraction this bucket refills at (for tests).</summary>
    internal (long Units, long Ticks, long Cost) Rate => (_unitsPerTick, _ticksPerUnit, _cost);

    public long CreateState() => Fresh;

    /// <summary>The fresh marker is read as a full bucket at any time.</summary>
    public long CreateState(long now) => Fresh;

    public bool TryAcquire(ref long state, long now, long permits, out Admission admission, out long retryAfter) =>
        Take(ref state, now, permits, lead: 0, out admission, out retryAfter);

    /// <summary>
    /// <see cref="TryAcquire"/> for a block of tokens that a core will use over time: their slots start no earlier than
    /// <paramref name="lead"/> units after now, so token j may be used until <c>lead + j * cost</c> after now even when
    /// the bucket is full. The slots between tat and the first one are left unused (tat only moves forward); they are what
    /// a full bucket would have dropped anyway unless it is drawn down meanwhile, so the bucket reads up to
    /// <paramref name="lead"/> units emptier than it is.
    /// </summary>
    public bool TryAcquireAhead(ref long state, long now, long permits, long lead, out Admission admission, out long retryAfter)
    {
        Debug.Assert(lead >= 0 && lead <= _burst);
        return Take(ref state, now, permits, lead, out admission, out retryAfter);
    }

    /// <summary>Takes <paramref name="permits"/> tokens whose slots start at max(tat, u + lead).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Take(ref long state, long now, long permits, long lead, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        long asked = now;
        long u = ToUnits(now);
        long cost = permits * _cost;
        while (true)
        {
            long tat = Volatile.Read(ref state);
            long ahead = Ahead(tat, ref now, ref u);
            long needed = (lead == 0 ? ahead : Math.Max(ahead, lead)) + cost;
            if (needed > _burst)
            {
                admission = default;
                retryAfter = ToTicksCeiling(needed - _burst, now, u) + (now - asked);
                return false;
            }

            // Linearization point: tat moves by exactly this admission's cost from max(tat, u) (from u + lead if later).
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

    /// <summary>
    /// Exact only while no one has changed the state since: tat moves back by <paramref name="amount"/> tokens, as if that
    /// many fewer had been admitted at the same time. A whole refund is <see cref="Refund(ref long, in Admission)"/>.
    /// </summary>
    public bool Refund(ref long state, in Admission admission, long amount)
    {
        Debug.Assert(amount > 0 && amount <= admission.Permits);
        if (amount == admission.Permits)
        {
            return Refund(ref state, admission);
        }

        long back = unchecked(admission.Marker - (amount * _cost));
        back = back == Fresh ? back + 1 : back; // one unit later, never the fresh marker
        return Interlocked.CompareExchange(ref state, back, admission.Marker) == admission.Marker;
    }

    public Admission Charge(ref long state, long now, long amount)
    {
        Debug.Assert(amount > 0);
        long u = ToUnits(now);
        while (true)
        {
            long tat = Volatile.Read(ref state);
            long ahead = Ahead(tat, ref now, ref u);

            // Clamped to whole tokens so that the charge's permits are what it counted: tat - u never passes _maxAhead.
            long counted = Math.Min(amount, (_maxAhead - ahead) / _cost);
            long next = unchecked(u + ahead + (counted * _cost));
            next = next == Fresh ? next + 1 : next;
            if (Interlocked.CompareExchange(ref state, next, tat) == tat)
            {
                return new Admission(Stamp(now, u), counted, next, tat);
            }
        }
    }

    /// <summary>Tokens not yet refilled, rounded up, including debt.</summary>
    public long GetUsed(ref long state, long now)
    {
        long u = ToUnits(now);
        long ahead = Ahead(Volatile.Read(ref state), ref now, ref u);
        return ahead == 0 ? 0 : ((ahead - 1) / _cost) + 1;
    }

    /// <summary>Ticks until tat is back at the clock (a full bucket); 0 when it is full.</summary>
    public long GetResetAfter(ref long state, long now)
    {
        long asked = now;
        long u = ToUnits(now);
        long ahead = Ahead(Volatile.Read(ref state), ref now, ref u);
        return ahead == 0 ? 0 : ToTicksCeiling(ahead, now, u) + (now - asked);
    }

    public long GetAvailablePermits(ref long state, long now)
    {
        long u = ToUnits(now);
        return Math.Max(0, (_burst - Ahead(Volatile.Read(ref state), ref now, ref u)) / _cost);
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

    /// <summary>The units one token costs: a token's slot in the theoretical arrival time.</summary>
    public long TokenCost => _cost;

    /// <summary>The stamp a decision at <paramref name="now"/> gets (the clock read, rounded down to a unit when units are coarser).</summary>
    public long StampAt(long now) => Stamp(now, ToUnits(now));

    /// <summary>
    /// Units from the decision stamp <paramref name="stamp"/> to <paramref name="now"/>: 0 when now is not later, saturated at
    /// <see cref="long.MaxValue"/>. Read as a difference of ticks, so it never wraps as units do.
    /// </summary>
    public long UnitsSince(long stamp, long now)
    {
        if (now <= stamp)
        {
            return 0;
        }

        if (_ticksPerUnit == 1)
        {
            Int128 units = (Int128)(now - stamp) * _unitsPerTick;
            return units > long.MaxValue ? long.MaxValue : (long)units;
        }

        return (now / _ticksPerUnit) - (stamp / _ticksPerUnit);
    }

    /// <summary>
    /// For an admission of n tokens at u: its tokens' slots in tat are [s, s + n * cost) with s = max(tat before, u) (or
    /// u + lead, if later, for <see cref="TryAcquireAhead"/>), and
    /// token j may be used at any time up to s + j * cost and still be an admission the invariant allows (tat moves from
    /// max(tat, u) by the same amount when u is not later than tat). This returns s - u - 1 (a unit early, in case tat was
    /// moved off the fresh marker), so token j may be used while <see cref="UnitsSince"/>(stamp, now) is at most this plus
    /// j * cost.
    /// </summary>
    public long FirstSlotAfterStamp(in Admission admission) =>
        unchecked(admission.Marker - (admission.Permits * _cost) - ToUnits(admission.Stamp)) - 1;

    private long ToUnits(long now) => _ticksPerUnit == 1 ? unchecked(now * _unitsPerTick) : now / _ticksPerUnit;

    /// <summary>
    /// How far tat is ahead of u (0 when the bucket is full; above the burst when it is in debt). A state further ahead
    /// than the burst, or far behind, is read against the clock again, after tat was read (see remarks: wrap-around);
    /// <paramref name="now"/> and <paramref name="u"/> then move to that later time, which the caller decides at.
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
        return (ulong)difference <= (ulong)_maxAhead ? difference : 0;
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
            // Units reach 2^62 only in debt: more than MaxTicks at one unit per tick.
            return Math.Min(((units - 1) / _unitsPerTick) + 1, TimeMath.MaxTicks);
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
