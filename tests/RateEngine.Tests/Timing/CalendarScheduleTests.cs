using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using RateEngine.Tests.Support;
using RateEngine.Timing;

namespace RateEngine.Tests.Timing;

public class CalendarScheduleTests
{
    private const long Frequency = TimeSpan.TicksPerSecond;

    [Fact]
    public void Find_Utc_DaysStartAtMidnight()
    {
        var origin = new DateTimeOffset(2026, 12, 2, 21, 0, 0, TimeSpan.Zero);
        var schedule = new CalendarSchedule(origin, Frequency, monthly: false, TimeZoneInfo.Utc);

        CalendarSchedule.Span first = schedule.Find(0);
        CalendarSchedule.Span second = schedule.Find(TimeSpan.FromHours(3).Ticks);

        Assert.Equal(new CalendarSchedule.Span(0, -TimeSpan.FromHours(21).Ticks, TimeSpan.FromHours(3).Ticks), first);
        Assert.Equal(new CalendarSchedule.Span(1, TimeSpan.FromHours(3).Ticks, TimeSpan.FromHours(27).Ticks), second);
        Assert.Equal(0, schedule.Find(TimeSpan.FromHours(3).Ticks - 1).Index);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LongestTicks_TwoHourDaylightSaving_CoversTheLongestPeriod(bool monthly)
    {
        // As at Antarctica/Troll: UTC+0, +2 h in summer, so the autumn change makes a 26-hour day (and a month 2 h long).
        var rule = TimeZoneInfo.AdjustmentRule.CreateAdjustmentRule(
            new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Unspecified),
            new DateTime(2100, 12, 31, 0, 0, 0, DateTimeKind.Unspecified),
            TimeSpan.FromHours(2),
            TimeZoneInfo.TransitionTime.CreateFloatingDateRule(new DateTime(1, 1, 1, 1, 0, 0), 3, 5, DayOfWeek.Sunday),
            TimeZoneInfo.TransitionTime.CreateFloatingDateRule(new DateTime(1, 1, 1, 3, 0, 0), 10, 5, DayOfWeek.Sunday));
        TimeZoneInfo troll = TimeZoneInfo.CreateCustomTimeZone("Test/Troll", TimeSpan.Zero, "Test/Troll", "Test/Troll", "Test/Troll DST", [rule]);
        var origin = new DateTimeOffset(2026, 10, 25, 12, 0, 0, TimeSpan.Zero);
        var schedule = new CalendarSchedule(origin, Frequency, monthly, troll);

        CalendarSchedule.Span span = schedule.Find(0);

        Assert.Equal((monthly ? TimeSpan.FromDays(31) : TimeSpan.FromDays(1)) + TimeSpan.FromHours(2), TimeSpan.FromTicks(span.End - span.Start));
        Assert.True(schedule.LongestTicks >= span.End - span.Start);
    }

    [Theory]
    [InlineData(2026, 3, 29, 23)] // spring forward: a 23-hour day
    [InlineData(2026, 10, 25, 25)] // fall back: a 25-hour day
    [InlineData(2026, 7, 1, 24)]
    public void Find_DstZone_DayLengthFollowsTheChange(int year, int month, int day, int hours)
    {
        var origin = new DateTimeOffset(year, month, day, 12, 0, 0, TimeSpan.Zero);
        var schedule = new CalendarSchedule(origin, Frequency, monthly: false, TestZones.Europe);

        CalendarSchedule.Span span = schedule.Find(0);

        Assert.Equal(TimeSpan.FromHours(hours).Ticks, span.End - span.Start);
    }

    [Fact]
    public void Find_MidnightThatDoesNotExist_DayStartsAtTheFirstInstantOfTheDate()
    {
        // Test/Midnight springs from 00:00 to 01:00 local (UTC-4 to UTC-3) on the last Sunday of March 2026, the 29th.
        var origin = new DateTimeOffset(2026, 3, 28, 12, 0, 0, TimeSpan.FromHours(-4));
        var schedule = new CalendarSchedule(origin, Frequency, monthly: false, TestZones.MidnightChange);

        CalendarSchedule.Span saturday = schedule.Find(0);

        var sundayStart = new DateTimeOffset(2026, 3, 29, 4, 0, 0, TimeSpan.Zero); // 00:00 in UTC-4 = 01:00 in UTC-3
        Assert.Equal((sundayStart - origin).Ticks, saturday.End);
        CalendarSchedule.Span sunday = schedule.Find(saturday.End);
        Assert.Equal(TimeSpan.FromHours(23).Ticks, sunday.End - sunday.Start);
    }

    [Fact]
    public void Find_MidnightThatOccursTwice_DayStartsAtTheFirst()
    {
        // Test/Midnight falls back from 01:00 to 00:00 (UTC-3 to UTC-4) on the last Sunday of October 2026, the 25th.
        var origin = new DateTimeOffset(2026, 10, 24, 12, 0, 0, TimeSpan.FromHours(-3));
        var schedule = new CalendarSchedule(origin, Frequency, monthly: false, TestZones.MidnightChange);

        CalendarSchedule.Span saturday = schedule.Find(0);

        var sundayStart = new DateTimeOffset(2026, 10, 25, 0, 0, 0, TimeSpan.FromHours(-3));
        Assert.Equal((sundayStart - origin).Ticks, saturday.End);
        CalendarSchedule.Span sunday = schedule.Find(saturday.End);
        Assert.Equal(TimeSpan.FromHours(25).Ticks, sunday.End - sunday.Start);
    }

    [Fact]
    public void Find_FallBackAcrossMidnight_TheRepeatedHalfHourIsInTheNextDaysSpan()
    {
        // DST ends at 00:30 back to 23:30 (UTC+1 to UTC+0) on 25 October: after the first midnight of the 25th (23:00 UTC)
        // the local date reads the 24th again from 23:30 to 00:00 UTC. Those instants lie in the 25th's span; taken by
        // their date they got the 24th's, a period already over, and a day's budget admitted in both.
        TimeZoneInfo zone = LateFall();
        var origin = new DateTimeOffset(2026, 10, 24, 12, 0, 0, TimeSpan.Zero);
        var schedule = new CalendarSchedule(origin, Frequency, monthly: false, zone);
        var firstMidnight = new DateTimeOffset(2026, 10, 24, 23, 0, 0, TimeSpan.Zero);
        long repeated = (new DateTimeOffset(2026, 10, 24, 23, 40, 0, TimeSpan.Zero) - origin).Ticks;

        CalendarSchedule.Span span = schedule.Find(repeated); // first, so that no period cached before answers it
        CalendarSchedule.Span twentyFifth = new CalendarSchedule(origin, Frequency, monthly: false, zone).Find((firstMidnight - origin).Ticks + 1);

        Assert.Equal(twentyFifth, span);
        Assert.Equal((firstMidnight - origin).Ticks, span.Start);
        Assert.InRange(repeated, span.Start, span.End - 1);
    }

    [Fact]
    public void Find_OriginInASpringForwardAcrossMidnight_OneSpanForTheOriginAndTheTickAfter()
    {
        // DST starts at 23:30 on 29 March (to 00:30 on the 30th); the origin, 23:40 UTC, reads 00:40 on the 30th, whose span
        // starts at 00:00 UTC. The origin's lookup in the constructor may not step back from the date like any other.
        TimeZoneInfo zone = TimeZoneInfo.CreateCustomTimeZone("Test/EarlySpring", TimeSpan.Zero, "Test/EarlySpring", "Test/EarlySpring", "Test/EarlySpring DST", [
            TimeZoneInfo.AdjustmentRule.CreateAdjustmentRule(
                new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Unspecified),
                new DateTime(2100, 12, 31, 0, 0, 0, DateTimeKind.Unspecified),
                TimeSpan.FromHours(1),
                TimeZoneInfo.TransitionTime.CreateFixedDateRule(new DateTime(1, 1, 1, 23, 30, 0), 3, 29),
                TimeZoneInfo.TransitionTime.CreateFixedDateRule(new DateTime(1, 1, 1, 2, 0, 0), 10, 25))]);
        var schedule = new CalendarSchedule(new DateTimeOffset(2026, 3, 29, 23, 40, 0, TimeSpan.Zero), Frequency, monthly: false, zone);

        CalendarSchedule.Span atOrigin = schedule.Find(0);

        Assert.Equal(atOrigin, schedule.Find(1));
        Assert.Equal(TimeSpan.FromMinutes(20).Ticks, atOrigin.End);
    }

    [Fact]
    public void Find_MonthsAtTheEndOfTheDateRange_DoesNotThrow()
    {
        // Instants past the range are capped, and the month lookup may move two months on from the capped one's and then ask
        // for the month after: the cap leaves room for all of them.
        var origin = DateTimeOffset.UnixEpoch;
        var schedule = new CalendarSchedule(origin, Frequency, monthly: true, TimeZoneInfo.Utc);

        CalendarSchedule.Span last = schedule.Find((DateTimeOffset.MaxValue - origin).Ticks);

        Assert.True(last.End > last.Start);
    }

    /// <summary>UTC+0, +1 h from 29 March to 25 October, whose DST ends at 00:30 (back to 23:30 of the day before).</summary>
    internal static TimeZoneInfo LateFall()
    {
        var rule = TimeZoneInfo.AdjustmentRule.CreateAdjustmentRule(
            new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Unspecified),
            new DateTime(2100, 12, 31, 0, 0, 0, DateTimeKind.Unspecified),
            TimeSpan.FromHours(1),
            TimeZoneInfo.TransitionTime.CreateFixedDateRule(new DateTime(1, 1, 1, 2, 0, 0), 3, 29),
            TimeZoneInfo.TransitionTime.CreateFixedDateRule(new DateTime(1, 1, 1, 0, 30, 0), 10, 25));
        return TimeZoneInfo.CreateCustomTimeZone("Test/LateFall", TimeSpan.Zero, "Test/LateFall", "Test/LateFall", "Test/LateFall DST", [rule]);
    }

    [Theory]
    [InlineData(2026, 2, 28)]
    [InlineData(2028, 2, 29)]
    [InlineData(2026, 4, 30)]
    [InlineData(2026, 12, 31)]
    public void Find_Months_LastAsLongAsTheMonth(int year, int month, int days)
    {
        var origin = new DateTimeOffset(year, month, 10, 0, 0, 0, TimeSpan.Zero);
        var schedule = new CalendarSchedule(origin, Frequency, monthly: true, TimeZoneInfo.Utc);

        CalendarSchedule.Span span = schedule.Find(0);

        Assert.Equal(TimeSpan.FromDays(days).Ticks, span.End - span.Start);
        Assert.Equal(1, schedule.Find(span.End).Index);
    }

    [Fact]
    public void Find_FarAheadAndBackAgain_IndexesStayExact()
    {
        var origin = new DateTimeOffset(2026, 12, 2, 0, 0, 0, TimeSpan.Zero);
        var schedule = new CalendarSchedule(origin, Frequency, monthly: false, TestZones.Europe);

        CalendarSchedule.Span far = schedule.Find(TimeSpan.FromDays(3_650.5).Ticks);
        CalendarSchedule.Span near = schedule.Find(TimeSpan.FromHours(30).Ticks);

        Assert.Equal(3_650, far.Index);
        Assert.Equal(1, near.Index);
    }

    [Property(MaxTest = 300)]
    public Property Find_AnyInstantInAnyZone_IsTheLocalDayOrMonthThatContainsIt() => Prop.ForAll(
        (from originHours in Gen.Choose(0, 24 * 365 * 3)
         from offsetMinutes in Gen.Choose(0, 60 * 24 * 800)
         from zone in Gen.Elements(TestZones.All.ToArray())
         from monthly in Gen.Elements(false, true)
         select (originHours, offsetMinutes, zone, monthly)).ToArbitrary(),
        sample =>
        {
            DateTimeOffset origin = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero).AddHours(sample.originHours).AddSeconds(17);
            var schedule = new CalendarSchedule(origin, Frequency, sample.monthly, sample.zone);
            DateTimeOffset instant = origin.AddMinutes(sample.offsetMinutes);

            CalendarSchedule.Span span = schedule.Find((instant - origin).Ticks);

            Assert.Equal((TestZones.DayStart(sample.zone, instant, sample.monthly) - origin).Ticks, span.Start);
            Assert.Equal((TestZones.NextDayStart(sample.zone, instant, sample.monthly) - origin).Ticks, span.End);
        });
}
