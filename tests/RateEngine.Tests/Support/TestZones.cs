namespace RateEngine.Tests.Support;

/// <summary>
/// Time zones built in code, so tests never depend on the machine's tz database (CI may run in a bare container).
/// </summary>
public static class TestZones
{
    /// <summary>UTC+1, DST +1 h from the last Sunday of March 02:00 to the last Sunday of October 03:00 (EU rules).</summary>
    public static readonly TimeZoneInfo Europe = Create(
        "Test/Europe", new DateTime(1, 1, 1, 2, 0, 0), new DateTime(1, 1, 1, 3, 0, 0));

    /// <summary>UTC−4, DST +1 h whose change is at local midnight: 00:00 does not exist in spring and occurs twice in autumn.</summary>
    public static readonly TimeZoneInfo MidnightChange = Create(
        "Test/Midnight", new DateTime(1, 1, 1, 0, 0, 0), new DateTime(1, 1, 1, 1, 0, 0), TimeSpan.FromHours(-4));

    public static IEnumerable<TimeZoneInfo> All => [TimeZoneInfo.Utc, Europe, MidnightChange];

    /// <summary>The first UTC instant whose local date is the local date of <paramref name="instant"/> (a binary search).</summary>
    public static DateTimeOffset DayStart(TimeZoneInfo zone, DateTimeOffset instant, bool monthly = false)
    {
        DateTime date = LocalDate(zone, instant, monthly);
        long low = instant.UtcTicks - (monthly ? TimeSpan.TicksPerDay * 32 : TimeSpan.TicksPerDay * 2);
        long high = instant.UtcTicks;
        while (low < high)
        {
            long middle = low + ((high - low) / 2);
            if (LocalDate(zone, new DateTimeOffset(middle, TimeSpan.Zero), monthly) >= date)
            {
                high = middle;
            }
            else
            {
                low = middle + 1;
            }
        }

        return new DateTimeOffset(low, TimeSpan.Zero);
    }

    /// <summary>The first UTC instant of the next local day (or month).</summary>
    public static DateTimeOffset NextDayStart(TimeZoneInfo zone, DateTimeOffset instant, bool monthly = false)
    {
        DateTimeOffset probe = DayStart(zone, instant, monthly);
        do
        {
            probe = probe.AddHours(1);
        }
        while (LocalDate(zone, probe, monthly) == LocalDate(zone, instant, monthly));

        return DayStart(zone, probe, monthly);
    }

    public static DateTime LocalDate(TimeZoneInfo zone, DateTimeOffset instant, bool monthly)
    {
        DateTime local = TimeZoneInfo.ConvertTime(instant, zone).DateTime.Date;
        return monthly ? new DateTime(local.Year, local.Month, 1, 0, 0, 0, DateTimeKind.Unspecified) : local;
    }

    private static TimeZoneInfo Create(string id, DateTime springTime, DateTime autumnTime, TimeSpan? offset = null)
    {
        var rule = TimeZoneInfo.AdjustmentRule.CreateAdjustmentRule(
            new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Unspecified),
            new DateTime(2100, 12, 31, 0, 0, 0, DateTimeKind.Unspecified),
            TimeSpan.FromHours(1),
            TimeZoneInfo.TransitionTime.CreateFloatingDateRule(springTime, 3, 5, DayOfWeek.Sunday),
            TimeZoneInfo.TransitionTime.CreateFloatingDateRule(autumnTime, 10, 5, DayOfWeek.Sunday));
        return TimeZoneInfo.CreateCustomTimeZone(id, offset ?? TimeSpan.FromHours(1), id, id, id + " DST", [rule]);
    }
}
