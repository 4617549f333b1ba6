namespace RateEngine;

/// <summary>The length of a calendar budget's period.</summary>
public enum CalendarPeriod
{
    /// <summary>From local midnight to the next (23 or 25 hours on the days DST changes).</summary>
    Day,

    /// <summary>From local midnight on the first of a month to the first of the next.</summary>
    Month,
}
