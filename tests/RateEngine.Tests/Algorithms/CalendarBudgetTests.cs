using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Algorithms;
using RateEngine.Tests.Support;
using RateEngine.Timing;

namespace RateEngine.Tests.Algorithms;

public class CalendarBudgetTests
{
    private const long Hour = TimeSpan.TicksPerHour;
    private static readonly DateTimeOffset Origin = new(2026, 12, 2, 22, 0, 0, TimeSpan.Zero);

    private readonly FakeTimeProvider _time = new(Origin);

    /// <summary>A budget on a fake clock at <paramref name="origin"/>: tests pass its ticks and move it along for refunds.</summary>
    private static CalendarBudget Budget(long limit, TimeZoneInfo? zone = null, DateTimeOffset? origin = null, bool monthly = false, FakeTimeProvider? time = null) =>
        new(limit, new CalendarSchedule(origin ?? Origin, TimeSpan.TicksPerSecond, monthly, zone ?? TimeZoneInfo.Utc), new LimiterClock(time ?? new FakeTimeProvider(origin ?? Origin)));

    [Fact]
    public void TryAcquire_UpToTheLimit_ThenRefusedUntilMidnight()
    {
        CalendarBudget budget = Budget(100);
        BudgetPeriodState state = budget.CreateState();

        Assert.True(budget.TryAcquire(ref state, 0, 60, out _, out _));
        Assert.True(budget.TryAcquire(ref state, Hour, 40, out _, out _));
        Assert.False(budget.TryAcquire(ref state, Hour, 1, out _, out long retryAfter));

        Assert.Equal(Hour, retryAfter); // midnight UTC is 2 h after the origin
        Assert.True(budget.TryAcquire(ref state, 2 * Hour, 100, out _, out _));
    }

    [Fact]
    public void TryAcquire_AmountsAboveInt32_AreCountedExactly()
    {
        const long Cap = 50_000L * 1_000_000; // $50,000 in micro-dollars
        CalendarBudget budget = Budget(Cap);
        BudgetPeriodState state = budget.CreateState();

        Assert.True(budget.TryAcquire(ref state, 0, Cap - 1, out _, out _));
        Assert.True(budget.TryAcquire(ref state, 0, 1, out _, out _));
        Assert.False(budget.TryAcquire(ref state, 0, 1, out _, out _));
        Assert.Equal(Cap, budget.GetUsed(ref state, 0));
    }

    [Fact]
    public void Refund_InItsPeriod_FreesExactly_AfterItNothing()
    {
        CalendarBudget budget = Budget(100, time: _time);
        BudgetPeriodState state = budget.CreateState();
        budget.TryAcquire(ref state, 0, 70, out Admission today, out _);

        Assert.True(budget.Refund(ref state, today, 30));
        Assert.Equal(40, budget.GetUsed(ref state, 0));
        _time.Advance(TimeSpan.FromHours(2));
        Assert.False(budget.Refund(ref state, today, 1)); // midnight passed, though no request has moved the state on yet
        _time.Advance(TimeSpan.FromHours(1));
        budget.TryAcquire(ref state, 3 * Hour, 10, out _, out _);
        Assert.False(budget.Refund(ref state, today, 40));
        Assert.Equal(10, budget.GetUsed(ref state, 3 * Hour));
    }

    [Fact]
    public void Charge_PastTheLimit_CountsAndRefusesUntilTheNextPeriod()
    {
        CalendarBudget budget = Budget(100);
        BudgetPeriodState state = budget.CreateState();
        budget.TryAcquire(ref state, 0, 90, out _, out _);

        Admission charge = budget.Charge(ref state, 0, 50);

        Assert.Equal(50, charge.Permits);
        Assert.Equal(140, budget.GetUsed(ref state, 0));
        Assert.Equal(0, budget.GetAvailablePermits(ref state, 0));
        Assert.False(budget.TryAcquire(ref state, 0, 1, out _, out _));
        Assert.Equal(2 * Hour, budget.GetResetAfter(ref state, 0));
        Assert.Equal(0, budget.GetUsed(ref state, 2 * Hour));
    }

    [Fact]
    public void TryAcquire_CallerBehindTheState_DecidesInTheStatesPeriod()
    {
        CalendarBudget budget = Budget(10);
        BudgetPeriodState state = budget.CreateState();
        budget.TryAcquire(ref state, 3 * Hour, 10, out _, out _); // tomorrow

        Assert.False(budget.TryAcquire(ref state, Hour, 1, out _, out _)); // a slow thread with today's clock read
        Assert.Equal(10, budget.GetUsed(ref state, 3 * Hour));
    }

    [Fact]
    public void GetFullSince_FreshEmptiedAndOver()
    {
        CalendarBudget budget = Budget(10);
        BudgetPeriodState state = budget.CreateState();
        Assert.Equal(0, budget.GetFullSince(ref state, 0));

        budget.TryAcquire(ref state, Hour, 4, out Admission admission, out _);
        Assert.Null(budget.GetFullSince(ref state, Hour));
        budget.Refund(ref state, admission);
        Assert.Equal(-22 * Hour, budget.GetFullSince(ref state, Hour)); // emptied by the refund: as fresh as at the day's start

        budget.TryAcquire(ref state, Hour, 4, out _, out _);
        Assert.Equal(2 * Hour, budget.GetFullSince(ref state, 5 * Hour));
    }

    /// <summary>
    /// Random days across both DST changes of a year, in UTC and two DST zones: every admission is decided exactly as a
    /// per-local-day ledger says, and usage resets exactly at the local midnight the zone's rules give.
    /// </summary>
    [Property(MaxTest = 200)]
    public Property RandomOperationsAcrossAYear_ResetExactlyAtLocalMidnight() => Prop.ForAll(
        (from zone in Gen.Elements(TestZones.All.ToArray())
         from start in Gen.Choose(0, 364 * 24)
         from monthly in Gen.Frequency((4, Gen.Constant(false)), (1, Gen.Constant(true)))
         from ops in Gen.ArrayOf(
             from advance in Gen.Frequency((4, Gen.Choose(0, 120)), (2, Gen.Choose(0, 60 * 30)), (1, Gen.Choose(0, 60 * 24 * 40)))
             from amount in Gen.Choose(1, 60)
             from refund in Gen.Elements(false, false, true)
             select (advance, amount, refund))
         select (zone, start, monthly, ops)).ToArbitrary(),
        sample =>
        {
            DateTimeOffset origin = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero).AddHours(sample.start).AddSeconds(13);
            var time = new FakeTimeProvider(origin);
            CalendarBudget budget = Budget(100, sample.zone, origin, sample.monthly, time);
            BudgetPeriodState state = budget.CreateState();
            var ledger = new Dictionary<DateTime, long>();
            var admissions = new List<(Admission Admission, DateTime Day, long Left)>();
            DateTimeOffset now = origin;
            foreach ((int advance, int amount, bool refund) in sample.ops)
            {
                now = now.AddMinutes(advance);
                time.Advance(TimeSpan.FromMinutes(advance));
                long ticks = (now - origin).Ticks;
                DateTime day = TestZones.LocalDate(sample.zone, now, sample.monthly);
                long used = ledger.GetValueOrDefault(day);
                if (refund && admissions.Count > 0)
                {
                    (Admission admission, DateTime admittedDay, long left) = admissions[^1];
                    admissions.RemoveAt(admissions.Count - 1);
                    long part = Math.Min(left, amount);
                    bool freed = budget.Refund(ref state, admission, part);
                    Assert.Equal(admittedDay == day, freed);
                    if (freed)
                    {
                        ledger[day] = used - part;
                    }
                }
                else
                {
                    bool admitted = budget.TryAcquire(ref state, ticks, amount, out Admission admission, out long retryAfter);
                    Assert.Equal(used + amount <= 100, admitted);
                    if (admitted)
                    {
                        ledger[day] = used + amount;
                        admissions.Add((admission, day, amount));
                    }
                    else
                    {
                        Assert.Equal((TestZones.NextDayStart(sample.zone, now, sample.monthly) - now).Ticks, retryAfter);
                    }
                }

                Assert.Equal(ledger.GetValueOrDefault(day), budget.GetUsed(ref state, ticks));
            }
        });

    [Fact]
    public void Stress_FourThreadsAcquireChargeAndRefund_LedgerIsExactAndAdmissionsNeverPassTheLimit()
    {
        const long Limit = 1_000_000;
        CalendarBudget budget = Budget(Limit);
        var cell = new BudgetPeriodState[] { budget.CreateState() };
        long[] admitted = new long[4];
        long[] charged = new long[4];
        long[] refunded = new long[4];

        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, thread =>
        {
            var random = new Random(thread);
            for (int i = 0; i < 200_000; i++)
            {
                long amount = random.Next(1, 20);
                if (random.Next(10) == 0)
                {
                    budget.Charge(ref cell[0], 0, amount);
                    charged[thread] += amount;
                }
                else if (budget.TryAcquire(ref cell[0], 0, amount, out Admission admission, out _))
                {
                    admitted[thread] += amount;
                    if (random.Next(3) == 0 && budget.Refund(ref cell[0], admission, amount / 2 + 1))
                    {
                        refunded[thread] += amount / 2 + 1;
                    }
                }
            }
        });

        long used = budget.GetUsed(ref cell[0], 0);
        Assert.Equal(admitted.Sum() + charged.Sum() - refunded.Sum(), used);
        Assert.True(admitted.Sum() - refunded.Sum() <= Limit, "admissions less refunds passed the limit");
    }

    [Fact]
    public void Stress_FourThreadsAcquireAndRefundWithoutCharges_UsageNeverPassesTheLimitAtAnyMoment()
    {
        // Without overrun charges nothing may take the usage past the limit, so it is checked while the threads run (the
        // totals at the end would not show an excess a later refund took back), and the budget must run out many times.
        const long Limit = 100_000;
        CalendarBudget budget = Budget(Limit);
        var cell = new BudgetPeriodState[] { budget.CreateState() };
        long overTheLimit = 0;
        long refusals = 0;

        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, thread =>
        {
            var random = new Random(thread);
            for (int i = 0; i < 200_000; i++)
            {
                long amount = random.Next(1, 20);
                if (!budget.TryAcquire(ref cell[0], 0, amount, out Admission admission, out _))
                {
                    Interlocked.Increment(ref refusals);
                }
                else if (random.Next(2) == 0)
                {
                    budget.Refund(ref cell[0], admission, amount);
                }

                if (budget.GetUsed(ref cell[0], 0) > Limit)
                {
                    Interlocked.Increment(ref overTheLimit);
                }
            }
        });

        Assert.Equal(0, Interlocked.Read(ref overTheLimit));
        Assert.True(Interlocked.Read(ref refusals) > 10_000, "the budget never ran out, so the check saw nothing");
    }
}
