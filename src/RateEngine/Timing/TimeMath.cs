namespace RateEngine.Timing;

/// <summary>Overflow-safe conversions between <see cref="TimeSpan"/> and clock ticks.</summary>
internal static class TimeMath
{
    /// <summary>
    /// The largest tick count any algorithm stores. A quarter of <see cref="long.MaxValue"/> leaves room to add a
    /// window, a burst or a retry delay to a timestamp without overflow; at 1 GHz it is still 73 years.
    /// </summary>
    public const long MaxTicks = long.MaxValue / 4;

    /// <summary>Span to ticks at <paramref name="frequency"/>, rounded up, saturated at <see cref="MaxTicks"/>.</summary>
    public static long ToTicks(TimeSpan span, long frequency)
    {
        if (span <= TimeSpan.Zero)
        {
            return 0;
        }

        Int128 ticks = ((Int128)span.Ticks * frequency + (TimeSpan.TicksPerSecond - 1)) / TimeSpan.TicksPerSecond;
        return ticks > MaxTicks ? MaxTicks : (long)ticks;
    }

    /// <summary>Ticks at <paramref name="frequency"/> to a span, rounded up, saturated at <see cref="TimeSpan.MaxValue"/>.</summary>
    public static TimeSpan ToTimeSpan(long ticks, long frequency)
    {
        if (ticks <= 0)
        {
            return TimeSpan.Zero;
        }

        Int128 spanTicks = ((Int128)ticks * TimeSpan.TicksPerSecond + (frequency - 1)) / frequency;
        return spanTicks >= TimeSpan.MaxValue.Ticks ? TimeSpan.MaxValue : new TimeSpan((long)spanTicks);
    }
}
