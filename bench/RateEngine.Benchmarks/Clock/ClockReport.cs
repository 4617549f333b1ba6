using System.Globalization;
using System.Text;
using RateEngine.Benchmarks.Compare;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Clock;

/// <summary>The <c>--clock</c> tables, their target verdicts (<see cref="Targets"/>) and clock.md.</summary>
internal static class ClockReport
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string ReadsTable(ClockResult result)
    {
        double stopwatch = result.Reads[0].NanosecondsPerOp.Median;
        return MarkdownTable.Render(
            ["clock read", "ns/op (median)", "min–max", "× Stopwatch"],
            [false, true, true, true],
            [.. result.Reads.Select(r => new[]
            {
                r.Name, Ns(r.NanosecondsPerOp.Median), $"{Ns(r.NanosecondsPerOp.Min)}–{Ns(r.NanosecondsPerOp.Max)}",
                Ratio(r.NanosecondsPerOp.Median / stopwatch),
            })]);
    }

    public static string AdmitsTable(ClockResult result) => MarkdownTable.Render(
        ["limiter", "clock", "admit ns/op (median)", "min–max", "× in-box"],
        [false, false, true, true, true],
        [.. result.Admits.Select(a => new[]
        {
            a.Name, a.Clock ?? "(timer)", Ns(a.NanosecondsPerOp.Median), $"{Ns(a.NanosecondsPerOp.Min)}–{Ns(a.NanosecondsPerOp.Max)}",
            a.Clock is null ? "baseline" : Ratio(a.NanosecondsPerOp.Median / Inbox(result, a).NanosecondsPerOp.Median),
        })]);

    public static string LagTable(ClockResult result)
    {
        static string[] Row(string what, LagStats s, long count, double[] p, double max) =>
            [what, $"{s.BusyThreads}", count.ToString("N0", Invariant), Us(p[0]), Us(p[1]), Us(p[2]), Us(p[3]), Us(max)];
        return MarkdownTable.Render(
            ["µs", "busy threads", "samples", "p50", "p90", "p99", "p99.9", "max"],
            [false, true, true, true, true, true, true, true],
            [
                Row("coarse clock lag behind Stopwatch", result.Idle, result.Idle.Samples, result.Idle.Lag, result.Idle.MaxLag),
                Row("coarse clock lag behind Stopwatch", result.Busy, result.Busy.Samples, result.Busy.Lag, result.Busy.MaxLag),
                Row("coarse clock step (tick to tick)", result.Idle, result.Idle.Steps, result.Idle.Step, result.Idle.MaxStep),
                Row("coarse clock step (tick to tick)", result.Busy, result.Busy.Steps, result.Busy.Step, result.Busy.MaxStep),
            ]);
    }

    /// <summary>Issue 13's targets, one line each.</summary>
    public static IReadOnlyList<string> Verdicts(ClockResult result)
    {
        double clockRead = result.Reads[0].NanosecondsPerOp.Median;
        var lines = new List<string>();
        foreach (Timed admit in result.Admits.Where(a => a.Clock is not null))
        {
            double inbox = Inbox(result, admit).NanosecondsPerOp.Median;
            double measured = admit.NanosecondsPerOp.Median;
            if (admit.Clock == "coarse")
            {
                double allowed = Targets.CoarseClockLatency * inbox;
                lines.Add(Verdict(admit, $"coarse clock: ≤ {Targets.CoarseClockLatency:0.0#}× in-box ({Ns(allowed)} ns)", measured, allowed,
                    Ratio(measured / inbox)));
            }
            else
            {
                double allowed = inbox + clockRead + Targets.PreciseClockAllowanceNanoseconds;
                lines.Add(Verdict(admit,
                    $"precise clock: ≤ in-box + one clock read + {Targets.PreciseClockAllowanceNanoseconds:0} ns ({Ns(inbox)} + {Ns(clockRead)} + {Targets.PreciseClockAllowanceNanoseconds:0} = {Ns(allowed)} ns)",
                    measured, allowed, $"{Ns(measured)} ns"));
            }
        }

        return lines;
    }

    public static string Document(ClockResult result, string commandLine)
    {
        MachineInfo m = result.Machine;
        var text = new StringBuilder();
        text.AppendLine("# The coarse clock against the precise one (issue 13)");
        text.AppendLine();
        text.AppendLine(Invariant,
            $"Measured by `{commandLine}` on {m.Date:yyyy-MM-dd HH:mm} UTC in {result.Duration.TotalSeconds:F0} s: {m.Cpu}, {m.Cores} cores, {m.Os}, {m.Runtime}, {m.Gc} GC, Stopwatch frequency {m.StopwatchFrequency:N0} Hz; load average {m.LoadAverageAtStart} at start, {m.LoadAverageAtEnd} at end. The machine is shared: read the ratios (both sides measured in the same run), not the absolute numbers.");
        text.AppendLine();
        text.AppendLine("## What a clock read costs");
        text.AppendLine();
        text.AppendLine(ReadsTable(result));
        text.AppendLine();
        text.AppendLine("## One admit, in-box against RateEngine on each clock");
        text.AppendLine();
        text.AppendLine(AdmitsTable(result));
        text.AppendLine();
        text.AppendLine("Targets (issue 13; `Compare/Targets.cs`):");
        text.AppendLine();
        foreach (string line in Verdicts(result))
        {
            text.AppendLine("- " + line);
        }

        text.AppendLine();
        text.AppendLine("## How far the coarse clock lags");
        text.AppendLine();
        text.AppendLine(LagTable(result));
        text.AppendLine();
        text.AppendLine("## Method");
        text.AppendLine();
        text.AppendLine(Invariant, $"- One process. Two warm-up passes, then {result.Rounds} rounds; each round times every clock read and every limiter once ({result.Run.TotalMilliseconds:F0} ms each), in an order rotated by one per round. The tables show the median round and the min–max.");
        text.AppendLine("- Clock reads: a loop summing the reads (`LimiterClock.Now()` is what every RateEngine limiter reads per acquire; on the coarse provider it is a load of the cached field). Admits: `AttemptAcquire(1)` + `Dispose()` on one thread, through the compare mode's loops, with the admit-path options of `Subjects/LimiterSetup.cs` (never refused; the harness checks). The precise and the coarse RateEngine limiter of one type run the same compiled loop here; the BenchmarkDotNet suite `ClockChoice` runs each alone.");
        text.AppendLine(Invariant, $"- Lag: one thread reads `CoarseTimeProvider.Shared.GetTimestamp()` then `Stopwatch.GetTimestamp()` in a loop for {result.Idle.Duration.TotalSeconds:F0} s, first with nothing else running in the process, then with {result.Busy.BusyThreads} threads spinning (every core busy, so the ticker thread competes for a core). Every read's lag counts, so the distribution is weighted by time, as a limiter's decisions see it. Steps are the differences between successive distinct cached values (the ticker's period as observed). Buckets of 1 µs; the maximum is exact.");
        return text.ToString();
    }

    private static Timed Inbox(ClockResult result, Timed admit) => result.Admits.First(a => a.Clock is null && a.Kind == admit.Kind.Baseline());

    private static string Verdict(Timed admit, string target, double measured, double allowed, string shown) =>
        $"{admit.Name}, {target}: {shown}, {(measured <= allowed ? "met" : $"missed by {Ns(measured - allowed)} ns ({(measured / allowed) - 1:P0} over)")}";

    private static string Ns(double value) => value.ToString(value < 10 ? "0.00" : "0.0", Invariant);

    private static string Us(double value) => value.ToString("N0", Invariant);

    private static string Ratio(double value) => value.ToString("0.00", Invariant) + "×";
}
