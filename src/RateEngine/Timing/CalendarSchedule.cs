using System.Diagnostics;

namespace RateEngine.Timing;

/// <summary>
/// Maps a limiter clock's ticks to calendar periods (days or months) in a time zone: each period runs from one local
/// midnight to the next (23 or 25 hours across a DST change), or from local midnight on the first of a month to the next.
/// </summary>
/// <remarks>
/// <para>The clock's tick 0 is the UTC instant <c>originUtc</c>; a tick t is the instant origin + t / frequency seconds,
/// so boundaries follow the monotone clock from the origin: a wall-clock step after creation does not move them (the
/// error is the monotone clock's drift from UTC since creation, seconds a month at worst on NTP-disciplined hosts, plus
/// whatever the wall clock was wrong at creation and any time the monotone clock did not count, such as a suspend).</para>
/// <para>Where local midnight does not exist (a zone whose DST starts at 00:00) the day starts at the first local instant of
/// the date (01:00); where it occurs twice (DST ending at 01:00 back to 00:00) it starts at the first occurrence. The
/// spans between those starts are the periods, and an instant belongs to the span that holds it, whatever its local date
/// says: where a DST change crosses midnight without landing on it, the two differ by up to the change (see Compute).</para>
/// <para>Time-zone conversions cost hundreds of nanoseconds, so the current period is cached in an immutable object: a
/// lookup inside it is one read and two compares, and the object is replaced (one allocation) when time leaves it.</para>
/// </remarks>
internal sealed class CalendarSchedule
{
    private readonly DateTimeOffset _origin;
    private readonly long _frequency;
    private readonly bool _monthly;
    private readonly TimeZoneInfo _zone;
    private readonly DateTime _originStart;
    private Span _current;

    public CalendarSchedule(DateTimeOffset originUtc, long ticksPerSecond, bool monthly, TimeZoneInfo zone)
    {
        Debug.Assert(ticksPerSecond > 0);
        _origin = originUtc.ToUniversalTime();
        _frequency = ticksPerSecond;
        _monthly = monthly;
        _zone = zone;
        _originStart = PeriodDate(_origin);
        _current = Compute(0);
    }

    /// <summary>
    /// The longest a period can last, in clock ticks: a day or a 31-day month, plus the largest step back the zone's rules
    /// make (an hour in most zones, two at Antarctica/Troll, whose autumn day lasts 26 hours; a change of standard offset
    /// counts as well).
    /// </summary>
    public long LongestTicks => ToClockTicks((!_monthly ? TimeSpan.FromDays(1) : TimeSpan.FromDays(31)) + LongestStepBack(_zone));

    /// <summary>At least an hour, and at least any one rule's daylight delta and change of standard offset together.</summary>
    private static TimeSpan LongestStepBack(TimeZoneInfo zone)
    {
        TimeSpan longest = TimeSpan.FromHours(1);
        foreach (TimeZoneInfo.AdjustmentRule rule in zone.GetAdjustmentRules())
        {
            TimeSpan step = rule.DaylightDelta.Duration() + rule.BaseUtcOffsetDelta.Duration();
            longest = step > longest ? step : longest;
        }

        return longest;
    }

    /// <summary>The period that contains clock tick <paramref name="ticks"/>.</summary>
    public Span Find(long ticks)
    {
        Span current = Volatile.Read(ref _current);
        if (ticks >= current.Start && ticks < current.End)
        {
            return current;
        }

        Span found = Compute(ticks);
        if (found.Index > current.Index)
        {
            Volatile.Write(ref _current, found); // a later period replaces the cache; a late caller's earlier one does not
        }

        return found;
    }

    private Span Compute(long ticks)
    {
        // An instant's local date names its period but in one case: a DST change that crosses midnight without landing on
        // it. Falling back from 00:30 to 23:30, the date comes round again after the next one began, and those instants
        // lie in the next period's span (between first midnights): taken by their date, a day's budget would count them in
        // a period that is over while its own span admitted its whole limit (twice the cap within it). Springing forward
        // from 23:30 to 00:30, the first half hour of a date lies before its span, which begins at midnight in the old
        // offset (see StartOf): those instants belong to the day before. So the spans decide, and the date only starts the
        // search, which moves at most one period either way.
        DateTime date = PeriodDate(ToInstant(ticks));
        for (int moved = 0; ; moved++)
        {
            DateTime next = Following(date);
            long start = ToBoundaryTick(StartOf(date));
            long end = ToBoundaryTick(StartOf(next));
            if (moved < 2 && ticks >= end)
            {
                date = next;
            }
            else if (moved < 2 && ticks < start)
            {
                date = !_monthly ? date.AddDays(-1) : date.AddMonths(-1);
            }
            else
            {
                long index = !_monthly
                    ? (date - _originStart).Days
                    : ((date.Year - _originStart.Year) * 12L) + date.Month - _originStart.Month;
                return new Span(index, start, end);
            }
        }
    }

    private DateTime Following(DateTime date) => !_monthly ? date.AddDays(1) : date.AddMonths(1);

    /// <summary>The local date that starts the period containing <paramref name="instant"/>.</summary>
    private DateTime PeriodDate(DateTimeOffset instant)
    {
        DateTime local = TimeZoneInfo.ConvertTime(instant, _zone).DateTime.Date;
        return !_monthly ? local : new DateTime(local.Year, local.Month, 1, 0, 0, 0, DateTimeKind.Unspecified);
    }

    /// <summary>The first UTC instant whose local date is <paramref name="date"/>.</summary>
    private DateTimeOffset StartOf(DateTime date)
    {
        var midnight = DateTime.SpecifyKind(date, DateTimeKind.Unspecified);
        if (_zone.IsInvalidTime(midnight))
        {
            // Skipped by a DST start: the day begins at the transition, which is midnight in the offset before it.
            TimeSpan before = _zone.GetUtcOffset(midnight.AddHours(-6));
            return new DateTimeOffset(midnight - before, TimeSpan.Zero);
        }

        if (_zone.IsAmbiguousTime(midnight))
        {
            // Twice, around a DST end: the first occurrence is the one in the larger offset.
            TimeSpan larger = _zone.GetAmbiguousTimeOffsets(midnight).Max();
            return new DateTimeOffset(midnight - larger, TimeSpan.Zero);
        }

        return new DateTimeOffset(midnight - _zone.GetUtcOffset(midnight), TimeSpan.Zero);
    }

    /// <summary>The instant of a clock tick: origin + ticks / frequency, rounded down to a <see cref="TimeSpan"/> tick.</summary>
    private DateTimeOffset ToInstant(long ticks)
    {
        Int128 spanTicks = Int128.Max(0, (Int128)ticks) * TimeSpan.TicksPerSecond / _frequency;
        // Keeps the months Compute may reach in range: the date's, up to two moves forward, and the one after those.
        long room = DateTimeOffset.MaxValue.UtcTicks - _origin.UtcTicks - (TimeSpan.TicksPerDay * 31 * 5);
        return _origin.AddTicks((long)Int128.Min(spanTicks, room));
    }

    /// <summary>The first clock tick whose instant is at or after <paramref name="boundary"/>.</summary>
    private long ToBoundaryTick(DateTimeOffset boundary)
    {
        Int128 product = (Int128)(boundary.UtcTicks - _origin.UtcTicks) * _frequency;
        Int128 quotient = Int128.DivRem(product, TimeSpan.TicksPerSecond).Quotient;
        if (quotient * TimeSpan.TicksPerSecond < product)
        {
            quotient++; // ceiling
        }

        return (long)Int128.Clamp(quotient, long.MinValue / 2, long.MaxValue / 2);
    }

    private long ToClockTicks(TimeSpan span) => (long)((Int128)span.Ticks * _frequency / TimeSpan.TicksPerSecond);

    /// <summary>
    /// One period: its index (counting up from 0 for the origin's local date; the origin may lie in the span of index -1 or
    /// 1 where a DST change crosses midnight) and its clock ticks [Start, End).
    /// </summary>
    internal sealed record Span(long Index, long Start, long End);
}
