using System.Diagnostics;
using RateEngine.Timing;

namespace RateEngine.Algorithms;

/// <summary>
/// A budget per calendar day or month (<see cref="CalendarSchedule"/>): at most <c>PermitLimit</c> admitted per period,
/// in <see cref="long"/> amounts (tokens, micro-dollars), reset at local midnight.
/// </summary>
/// <remarks>
/// <para><b>State</b>: a reference to the key's current <see cref="BudgetPeriodState"/>: (period, bounds, used). A new
/// period installs a new object by CAS (one allocation per key per period, never per request).</para>
/// <para><b>Invariant</b>: a period's object is the only place its usage is counted, and admissions stamped in a period
/// sum to at most the limit there. There is one object per period: a thread that sees an older period installs the new
/// one by CAS from the old, and a loser reads the winner's. A caller whose clock read is behind the object's period (a
/// slow thread, or a clock that went back) decides in the object's period, stamped at its start, which lies between its
/// clock read and its CAS. A caller that read the current object just before the next period began may still land in it:
/// its stamp (its clock read) is in that period, so that is where it belongs.</para>
/// <para><b>Linearization point</b>: the CAS of the object's <c>Used</c>.</para>
/// <para><b>Charge</b> (an overrun) adds whatever the limit, up to <see cref="long.MaxValue"/> / 2. <b>Refund</b> subtracts
/// from the admission's period object while it is current; once another period began, the amount came back with it,
/// so nothing is freed. A refund never takes more than its admission added (the caller refunds each admission once), so
/// usage never goes below zero.</para>
/// </remarks>
internal readonly struct CalendarBudget : IWeightedAlgorithm<BudgetPeriodState>, IPeriodic
{
    private const long MaxUsed = long.MaxValue / 2;

    private readonly long _limit;
    private readonly CalendarSchedule _schedule;
    private readonly LimiterClock _clock;

    /// <param name="limit">The most admitted per period.</param>
    /// <param name="schedule">The periods, on <paramref name="clock"/>'s ticks.</param>
    /// <param name="clock">Read by a refund, which is given no time: a period that has ended frees nothing.</param>
    public CalendarBudget(long limit, CalendarSchedule schedule, LimiterClock clock)
    {
        Debug.Assert(limit is > 0 and <= MaxUsed);
        _limit = limit;
        _schedule = schedule;
        _clock = clock;
    }

    public long PermitLimit => _limit;

    /// <summary>A budget spent now is whole again at the latest one period on.</summary>
    public long RefillTicks => _schedule.LongestTicks;

    public long RefundHorizon => long.MaxValue;

    public BudgetPeriodState CreateState() => BudgetPeriodState.Fresh;

    /// <summary>A budget's periods are numbered by its calendar, not by a wrapping epoch: the fresh state serves any time.</summary>
    public BudgetPeriodState CreateState(long now) => BudgetPeriodState.Fresh;

    /// <summary>The admission's period counted <c>Previous</c> before it, then its permits.</summary>
    public long UsedAfter(in Admission admission) => admission.Previous + admission.Permits;

    public bool TryAcquire(ref BudgetPeriodState state, long now, long permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        BudgetPeriodState period = Current(ref state, now);
        while (true)
        {
            long used = Volatile.Read(ref period.Used);
            if (used + permits > _limit)
            {
                admission = default;
                retryAfter = Math.Max(1, period.End - now);
                return false;
            }

            // Linearization point: this period's count moves from what the decision saw.
            if (Interlocked.CompareExchange(ref period.Used, used + permits, used) == used)
            {
                admission = new Admission(Math.Max(now, period.Start), permits, period.Period, used);
                retryAfter = 0;
                return true;
            }
        }
    }

    public Admission Charge(ref BudgetPeriodState state, long now, long amount)
    {
        Debug.Assert(amount > 0);
        BudgetPeriodState period = Current(ref state, now);
        while (true)
        {
            long used = Volatile.Read(ref period.Used);
            long charged = Math.Min(MaxUsed, used + Math.Min(amount, MaxUsed));
            if (Interlocked.CompareExchange(ref period.Used, charged, used) == used)
            {
                return new Admission(Math.Max(now, period.Start), charged - used, period.Period, used);
            }
        }
    }

    public bool Refund(ref BudgetPeriodState state, in Admission admission) => Refund(ref state, admission, admission.Permits);

    public bool Refund(ref BudgetPeriodState state, in Admission admission, long amount)
    {
        // Its period is over (a later one began, or its end has passed with no request since): the amount came back with it.
        BudgetPeriodState period = Volatile.Read(ref state);
        if (period.Period != admission.Marker || _clock.Now() >= period.End)
        {
            return false;
        }

        long after = Interlocked.Add(ref period.Used, -amount);
        Debug.Assert(after >= 0, "refunded more than was admitted");
        return true;
    }

    public long GetAvailablePermits(ref BudgetPeriodState state, long now) => Math.Max(0, _limit - GetUsed(ref state, now));

    public long GetRetryAfter(ref BudgetPeriodState state, long now, long permits)
    {
        BudgetPeriodState? period = Deciding(ref state, now, out long end);
        long used = period is null ? 0 : Volatile.Read(ref period.Used);
        return used + permits <= _limit ? 0 : Math.Max(1, end - now);
    }

    public long PeriodAt(long now) => _schedule.Find(now).Index;

    public long? GetFullSince(ref BudgetPeriodState state, long now)
    {
        BudgetPeriodState held = Volatile.Read(ref state);
        if (ReferenceEquals(held, BudgetPeriodState.Fresh))
        {
            return 0;
        }

        CalendarSchedule.Span span = _schedule.Find(now);
        if (held.Period < span.Index)
        {
            return Math.Min(now, held.End); // its period is over, and with it everything it counted
        }

        return Volatile.Read(ref held.Used) == 0 ? Math.Min(now, held.Start) : null;
    }

    public long GetUsed(ref BudgetPeriodState state, long now)
    {
        BudgetPeriodState? period = Deciding(ref state, now, out _);
        return period is null ? 0 : Volatile.Read(ref period.Used);
    }

    public long GetResetAfter(ref BudgetPeriodState state, long now)
    {
        BudgetPeriodState? period = Deciding(ref state, now, out long end);
        return period is null || Volatile.Read(ref period.Used) == 0 ? 0 : Math.Max(1, end - now);
    }

    /// <summary>
    /// The period object a decision at <paramref name="now"/> uses, installing a new one if its period began: the key's
    /// object when its period is now's or later (a caller behind it decides in it), otherwise a fresh one for now's period.
    /// </summary>
    private BudgetPeriodState Current(ref BudgetPeriodState state, long now)
    {
        CalendarSchedule.Span span = _schedule.Find(now);
        while (true)
        {
            BudgetPeriodState held = Volatile.Read(ref state);
            if (held.Period >= span.Index)
            {
                return held;
            }

            var next = new BudgetPeriodState(span.Index, span.Start, span.End);
            if (Interlocked.CompareExchange(ref state, next, held) == held)
            {
                return next;
            }
        }
    }

    /// <summary>Read-only <see cref="Current"/>: null when the key's object belongs to a period that is over.</summary>
    private BudgetPeriodState? Deciding(ref BudgetPeriodState state, long now, out long end)
    {
        CalendarSchedule.Span span = _schedule.Find(now);
        BudgetPeriodState held = Volatile.Read(ref state);
        if (held.Period >= span.Index)
        {
            end = held.End;
            return held;
        }

        end = span.End;
        return null;
    }
}
