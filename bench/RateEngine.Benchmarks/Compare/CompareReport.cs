using System.Text;
using RateEngine.Benchmarks.Simulations;
using RateEngine.Benchmarks.Subjects;
using static RateEngine.Benchmarks.Compare.Cells;

namespace RateEngine.Benchmarks.Compare;

/// <summary>The compare table (console and markdown), the targets check and the files it writes.</summary>
internal static class CompareReport
{
    private static readonly string[] Header =
    [
        "limiter",
        "admit ns/op (1 thr)",
        "× in-box",
        "reject ns/op (1 thr)",
        "× in-box",
        "ops/s, 1 thr, shared",
        "ops/s, 2 thr, shared",
        "2 thr × in-box",
        "2 thr / ceiling",
        "B/op admit",
        "B/op reject",
    ];

    private static readonly bool[] RightAligned = [false, true, true, true, true, true, true, true, true, true, true];

    /// <summary>The main table, as aligned markdown (readable as is on a console).</summary>
    public static string Table(CompareResult result)
    {
        CompareRow ceiling = result.Ceiling;
        var rows = new List<string[]>();
        foreach (CompareRow row in result.Rows)
        {
            if (row.Kind is not { } kind)
            {
                rows.Add(
                [
                    "bare Interlocked.Increment (ceiling)",
                    Ns(row.AdmitNanoseconds.Median), "", "", "",
                    Rate(row.OneThreadOpsPerSecond.Median), Rate(row.TwoThreadOpsPerSecond.Median), "", "100 %",
                    Bytes(row.AdmitBytesPerOperation), "",
                ]);
                continue;
            }

            CompareRow baseline = result.Row(kind.Baseline());
            bool isBaseline = kind.IsInbox();
            rows.Add(
            [
                kind.DisplayName(),
                Ns(row.AdmitNanoseconds.Median),
                isBaseline ? "baseline" : Ratio(row.AdmitNanoseconds.Median / baseline.AdmitNanoseconds.Median),
                Ns(row.RejectNanoseconds!.Median),
                isBaseline ? "baseline" : Ratio(row.RejectNanoseconds.Median / baseline.RejectNanoseconds!.Median),
                Rate(row.OneThreadOpsPerSecond.Median),
                Rate(row.TwoThreadOpsPerSecond.Median),
                isBaseline ? "baseline" : Ratio(row.TwoThreadOpsPerSecond.Median / baseline.TwoThreadOpsPerSecond.Median),
                Percent(row.TwoThreadOpsPerSecond.Median / ceiling.TwoThreadOpsPerSecond.Median),
                Bytes(row.AdmitBytesPerOperation),
                Bytes(row.RejectBytesPerOperation!.Value),
            ]);
        }

        return MarkdownTable.Render(Header, RightAligned, rows);
    }

    /// <summary>Each of the <see cref="Compare.Targets"/> for single limiters: met or missed, and by how much.</summary>
    public static IReadOnlyList<TargetCheck> CheckTargets(CompareResult result)
    {
        var checks = new List<TargetCheck>();
        foreach (CompareRow row in result.Rows)
        {
            if (row.Kind is not { } kind || kind.IsInbox())
            {
                continue;
            }

            CompareRow baseline = result.Row(kind.Baseline());
            if (Targets.Latency(kind) is { } target)
            {
                double latency = row.AdmitNanoseconds.Median / baseline.AdmitNanoseconds.Median;
                checks.Add(new TargetCheck(
                    kind,
                    $"1 thread admit ≤ {target:0.0#}× in-box ns/op",
                    $"{latency:0.00}×",
                    latency <= target,
                    latency <= target
                        ? $"met ({target / latency:0.0#}× headroom)"
                        : $"missed: {latency / target:0.00}× the allowed time ({(latency / target - 1) * 100:F0} % over)"));
            }

            double goal = Targets.Throughput(kind)!.Value;
            if (Targets.ThroughputEveryRound(kind))
            {
                // Both sides of a round ran within the same rotation, so a burst of outside load hits both.
                double[] ratios = [.. row.TwoThreadRounds.Zip(baseline.TwoThreadRounds, (a, b) => a / b)];
                bool every = ratios.Min() >= goal;
                checks.Add(new TargetCheck(
                    kind,
                    $"2 threads ≥ {goal:0.#}× in-box ops/s in every round",
                    $"{Stat.Of(ratios).Median:0.00}× (rounds {ratios.Min():0.00}× – {ratios.Max():0.00}×)",
                    every,
                    every
                        ? $"met in all {ratios.Length} rounds"
                        : $"missed in {ratios.Count(r => r < goal)} of {ratios.Length} rounds"));
            }
            else
            {
                double throughput = row.TwoThreadOpsPerSecond.Median / baseline.TwoThreadOpsPerSecond.Median;
                checks.Add(new TargetCheck(
                    kind,
                    $"2 threads ≥ {goal:0.#}× in-box ops/s",
                    $"{throughput:0.00}×",
                    throughput >= goal,
                    throughput >= goal
                        ? $"met ({throughput / goal:0.0#}× the goal)"
                        : $"missed: reached {throughput / goal * 100:F0} % of the goal"));
            }

            double bytes = Math.Max(row.AdmitBytesPerOperation, row.TwoThreadBytesPerOperation);
            checks.Add(new TargetCheck(
                kind,
                $"{Targets.AdmitBytes:0} B allocated per successful acquire",
                $"{row.AdmitBytesPerOperation:0.###} B (1 thr), {row.TwoThreadBytesPerOperation:0.###} B (2 thr, whole process)",
                row.AdmitBytesPerOperation <= Targets.AdmitBytes,
                row.AdmitBytesPerOperation <= Targets.AdmitBytes
                    ? bytes == 0 ? "met" : "met on the acquiring thread (the process-wide figure includes timers and thread start-up)"
                    : $"missed: {row.AdmitBytesPerOperation:0.###} B/op"));
        }

        return checks;
    }

    public static string TargetsTable(CompareResult result) => MarkdownTable.Render(
        ["limiter", "target", "measured", "verdict"],
        [false, false, true, false],
        CheckTargets(result).Select(c => new[] { c.Kind.DisplayName(), c.Target, c.Measured, c.Verdict }).ToList());

    /// <summary>Writes compare.md and compare.png to the settings' output directory.</summary>
    public static (string Markdown, string Chart) Write(CompareResult result, string commandLine)
    {
        Directory.CreateDirectory(result.Settings.OutputDirectory);
        string markdownPath = Path.Combine(result.Settings.OutputDirectory, "compare.md");
        string chartPath = Path.Combine(result.Settings.OutputDirectory, "compare.png");
        File.WriteAllText(markdownPath, Document(result, commandLine));
        CompareChart.Save(result, chartPath);
        return (markdownPath, chartPath);
    }

    private static string Document(CompareResult result, string commandLine)
    {
        MachineInfo m = result.Machine;
        CompareSettings s = result.Settings;
        var text = new StringBuilder();
        text.AppendLine("# RateEngine vs the in-box limiters");
        text.AppendLine();
        text.AppendLine(Invariant, $"Measured by `{commandLine}` on {m.Date:yyyy-MM-dd HH:mm} UTC; the run took {result.Duration.TotalSeconds:F0} s.");
        if (s.IsSmoke)
        {
            text.AppendLine();
            text.AppendLine("**Smoke run: tiny iteration counts, the numbers are not measurements.**");
        }

        text.AppendLine();
        text.AppendLine(MarkdownTable.Render(
            ["machine", ""],
            [false, false],
            [
                ["CPU", $"{m.Cpu} (from /proc/cpuinfo)"],
                ["cores", m.Cores.ToString(Invariant)],
                ["OS", m.Os],
                [".NET", m.Runtime],
                ["GC, tiered PGO", $"{m.Gc}; PGO {m.Pgo}"],
                ["Stopwatch frequency", string.Create(Invariant, $"{m.StopwatchFrequency:N0} Hz")],
                ["cache line, round trip between 2 threads", $"{m.RoundTripText} (what each 2-thread figure pays per transfer of a shared line; it differs between hosts)"],
                ["one dependent load in random lines", $"{m.DependentLoadText} (what a miss costs at that footprint: the 10k-user policy and 250k-key first touch keep several MB)"],
                ["load average (1/5/15 min)", $"{m.LoadAverageAtStart} at start, {m.LoadAverageAtEnd} at end"],
            ]));
        text.AppendLine();
        text.AppendLine(Table(result));
        text.AppendLine();
        text.AppendLine("How to read it:");
        text.AppendLine();
        text.AppendLine("- **admit / reject ns/op (1 thr)**: one thread, `AttemptAcquire(1)` then `Dispose()` of the lease, on a limiter that never");
        text.AppendLine("  runs out (admit) or that ran out for the next hour (reject). Lower is better. `× in-box` is RateEngine's time over the");
        text.AppendLine("  in-box limiter's: the log and the counter against `SlidingWindowRateLimiter`, fixed against `FixedWindowRateLimiter`,");
        text.AppendLine("  bucket against `TokenBucketRateLimiter`.");
        text.AppendLine("- **ops/s, N thr, shared**: N threads acquire from one shared limiter (admit path) for a fixed time; total admissions per");
        text.AppendLine("  second over all threads. `2 thr × in-box` is RateEngine's throughput over the in-box limiter's (higher is better).");
        text.AppendLine("- **2 thr / ceiling**: the limiter's 2-thread throughput as a fraction of two threads doing nothing but");
        text.AppendLine("  `Interlocked.Increment` on one shared counter: no limiter that updates one shared word per admission can beat it.");
        text.AppendLine("- **B/op**: bytes allocated per attempt on the measuring thread (`GC.GetAllocatedBytesForCurrentThread`), over all rounds.");
        text.AppendLine();
        text.AppendLine("## Targets (bench/README.md)");
        text.AppendLine();
        text.AppendLine(TargetsTable(result));
        text.AppendLine();
        text.AppendLine("## Method");
        text.AppendLine();
        text.AppendLine(Invariant, $"- One process, every limiter created once per path. Two warm-up passes over all limiters ({s.WarmUp.TotalMilliseconds:F0} ms per limiter and path) so that each loop runs tier-1 JIT code.");
        text.AppendLine(Invariant, $"- {s.Rounds} rounds; each round visits every limiter (in an order rotated by one per round, so a burst of outside load is shared out) and takes one {s.SingleThreadRound.TotalMilliseconds:F0} ms admit run, one {s.SingleThreadRound.TotalMilliseconds:F0} ms reject run, one {s.ThreadedRound.TotalMilliseconds:F0} ms 1-thread and one {s.ThreadedRound.TotalMilliseconds:F0} ms 2-thread run. The table shows the median round, timed with `Stopwatch`.");
        text.AppendLine("- Each limiter is called through its own compiled copy of the loop (a generic loop instantiated over a struct per limiter type), so every limiter has its own call site and PGO profile, as in an application that uses one limiter type.");
        text.AppendLine("- Every run counts admissions and the harness fails if an admit run was refused once or a reject run admitted once.");
        text.AppendLine(Invariant, $"- Options: admit path `PermitLimit = int.MaxValue` per {LimiterSetup.AdmitWindow.TotalSeconds:F0} s window ({LimiterSetup.Segments} segments for the sliding windows; the bucket refills `int.MaxValue` tokens per {LimiterSetup.AdmitWindow.TotalSeconds:F0} s), in-box limiters with `AutoReplenishment = true`; the log, which keeps one entry per permit, `PermitLimit = {LimiterSetup.LogAdmitLimit}` per {LimiterSetup.LogAdmitWindow.TotalMicroseconds:F0} µs, and with per-core blocks (default `PerCoreReservationOptions`) `PermitLimit = {LimiterSetup.PerCoreLogAdmitLimit:N0}` per {LimiterSetup.PerCoreLogAdmitWindow.TotalMilliseconds:F0} ms (its blocks live 1/256 of the window). Reject path: 1 permit per {LimiterSetup.RejectWindow.TotalHours:F0} h, taken up front. No queue.");
        text.AppendLine("- Threaded runs start their threads before the clock, release them together and stop them with a flag; each thread times itself and the throughput is the sum of the threads' rates. The machine has 2 cores, so 2 threads use all of it: any other process (a build, another benchmark) shows up as noise, which the min–max columns below make visible.");
        text.AppendLine();
        text.AppendLine("### Spread over the rounds (min – max)");
        text.AppendLine();
        text.AppendLine(MarkdownTable.Render(
            ["limiter", "admit ns/op", "reject ns/op", "ops/s 1 thr", "ops/s 2 thr", "B/op 2 thr (whole process)", "attempts measured"],
            [false, true, true, true, true, true, true],
            result.Rows.Select(r => new[]
            {
                r.Kind?.DisplayName() ?? "Interlocked ceiling",
                $"{Ns(r.AdmitNanoseconds.Min)} – {Ns(r.AdmitNanoseconds.Max)}",
                r.RejectNanoseconds is { } rej ? $"{Ns(rej.Min)} – {Ns(rej.Max)}" : "",
                $"{Rate(r.OneThreadOpsPerSecond.Min)} – {Rate(r.OneThreadOpsPerSecond.Max)}",
                $"{Rate(r.TwoThreadOpsPerSecond.Min)} – {Rate(r.TwoThreadOpsPerSecond.Max)}",
                Bytes(r.TwoThreadBytesPerOperation),
                r.TotalOperations.ToString("N0", Invariant),
            }).ToList()));
        text.AppendLine();
        if (result.Partitions is not null)
        {
            PartitionReport.AppendSection(text, result);
        }

        if (result.Policy is { } policy)
        {
            Policies.PolicyReport.AppendSection(text, policy);
        }

        if (result.Estimator is { } estimator)
        {
            EstimatorReport.AppendSection(text, estimator, "## Learned reservations (estimator simulation)");
        }

        if (result.Redis is { } redis)
        {
            Redis.RedisReport.AppendSection(
                text, redis, Redis.RedisBenchSettings.ForCompare(result.Settings.IsSmoke), $"## Redis mode (short runs, {redis.Duration.TotalSeconds:F0} s; `--redis` for the full ones)");
        }

        text.AppendLine("![compare chart](compare.png)");
        return text.ToString();
    }
}
