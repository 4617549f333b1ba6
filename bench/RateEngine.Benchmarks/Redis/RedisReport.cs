using System.Globalization;
using System.Text;

namespace RateEngine.Benchmarks.Redis;

/// <summary>The Redis section's tables and issue 11's targets for the hybrid mode, as markdown.</summary>
internal static class RedisReport
{
    public static void AppendSection(StringBuilder text, RedisResult result, RedisBenchSettings settings, string heading)
    {
        text.AppendLine(heading);
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture,
            $"{RedisBenchSettings.Nodes} nodes (a connection and a limiter each) × {RedisBenchSettings.CallersPerNode} async callers, one loopback redis-server; "
            + $"`AcquireAsync` in a loop on one key, or on a random one of {RedisBenchSettings.ManyKeys:N0} keys per attempt.");
        text.AppendLine();
        foreach (IGrouping<int, RedisThroughput> scenario in result.Throughput.GroupBy(row => row.Keys))
        {
            TimeSpan measure = scenario.Key == 1 ? settings.Measure : settings.ManyKeysMeasure;
            string warmUps = string.Join(", ", scenario.GroupBy(row => row.WarmUp).OrderBy(group => group.Count()).Select(group => group.Count() == scenario.Count()
                ? string.Create(CultureInfo.InvariantCulture, $"{group.Key.TotalSeconds:F1} s")
                : group.Count() == 1
                    ? string.Create(CultureInfo.InvariantCulture, $"{group.Key.TotalSeconds:F1} s for {group.Single().Design.Split(" (")[0]}")
                    : string.Create(CultureInfo.InvariantCulture, $"{group.Key.TotalSeconds:F1} s for the others")));
            string steady = settings.HybridSteadyAfter > TimeSpan.Zero
                ? string.Create(CultureInfo.InvariantCulture,
                    $"; a hybrid run's measured part starts at least {settings.HybridSteadyAfter.TotalSeconds:F0} s into a {RedisHarness.ThroughputWindow.TotalSeconds:F0} s window, after the renewal of every key's blocks that follows each boundary")
                : string.Empty;
            text.AppendLine(CultureInfo.InvariantCulture,
                $"**{Keys(scenario.Key)}, throughput** (a limit never reached; {measure.TotalSeconds:F1} s measured after a warm-up of {warmUps}{steady}):");
            text.AppendLine();
            AppendThroughputTable(text, "admissions", scenario, RedisDesign.Exact.Name);

            text.AppendLine();
            foreach (RedisThroughput row in scenario.Where(row => row.Commands is not null))
            {
                string refused = row.Refused > 0 ? string.Create(CultureInfo.InvariantCulture, $"; {row.Refused:N0} refused") : string.Empty;
                string commands = string.Join(", ", row.Commands!.OrderByDescending(entry => entry.Value).Select(entry => string.Create(CultureInfo.InvariantCulture, $"{entry.Key} {entry.Value:N0}")));
                text.AppendLine(CultureInfo.InvariantCulture, $"- {row.Design}, commands in the measured part{MeasuredFrom(row)}: {commands}{refused}");
            }

            text.AppendLine();
        }

        AppendPolicy(text, result.Policy, settings);
        if (result.Saturation.Count > 0)
        {
            text.AppendLine("**Saturation** (every caller hammering a small cap, 1 ms back-off after a refusal; each decision's time as the design read it):");
            text.AppendLine();
            text.AppendLine("| design | keys | cap | over: most admissions past the cap in one window | under: mean shortfall in saturated windows | saturated windows | mean admitted in them |");
            text.AppendLine("|---|---:|---|---:|---:|---:|---:|");
            foreach (RedisSaturation row in result.Saturation)
            {
                text.AppendLine(CultureInfo.InvariantCulture,
                    $"| {row.Design} | {row.Keys:N0} | {row.Cap} per {row.Window.TotalMilliseconds:F0} ms | {row.OverMax} | {row.UnderShare:P1} | {row.SaturatedWindows:N0} | {row.AdmittedPerWindow:F2} |");
            }

            text.AppendLine();
        }

        text.AppendLine("How it counts:");
        text.AppendLine();
        text.AppendLine("- **commands** are the difference of two `INFO commandstats` readings taken on a thread of their own at the start and end of the measured part,");
        text.AppendLine("  summed over every command but the clients' upkeep (`info`, `ping`, `client`, `config`, `cluster`, `echo`, `subscribe`, `hello`, `command`, `select`, `role`),");
        text.AppendLine("  including the calls a script makes inside Redis; per design they are listed under the table. **Round trips** are the commands a client sent");
        text.AppendLine("  and waited for: `evalsha` + `eval` + `script` for exact and hybrid (a script's inner calls travel with it); for the seed designs every command,");
        text.AppendLine("  except that a `MULTI` … `EXEC` block is one write and one reply in SE.Redis, so its `MULTI` and four queued commands count with its `EXEC`.");
        text.AppendLine("- **latency**: `Stopwatch` around `AcquireAsync` and its await, every acquire of the measured part (log-linear histogram, 1.6 % buckets),");
        text.AppendLine(CultureInfo.InvariantCulture,
            $"  less what the two clock readings add by themselves (the median of empty pairs measured at the start of the run: {result.TimerPairNanoseconds:F0} ns).");
        text.AppendLine("  *Answered without waiting*: the returned task was already complete (the hybrid mode's local block; every in-process acquire).");
        text.AppendLine("- **over / under**: each attempt's decision time is the limiter's own clock reading (exact and hybrid run on a client clock here, so that");
        text.AppendLine("  the time they decided on is known; the seed designs score members on it). Over is the largest excess over the cap in any window the design");
        text.AppendLine("  promises (aligned windows for the fixed window; every window (t − W, t] for the seed designs' sliding log). Under is measured on aligned");
        text.AppendLine("  full windows after the first one, where a key's attempts exceeded the cap: mean of (cap − admitted, at least 0) over the cap.");
        text.AppendLine();
        AppendTargets(text, result, settings);
    }

    /// <summary>The layered policy's table: a request's acquire and reconcile, in process, exact on Redis, and hybrid.</summary>
    private static void AppendPolicy(StringBuilder text, IReadOnlyList<RedisThroughput> rows, RedisBenchSettings settings)
    {
        if (rows.Count == 0)
        {
            return;
        }

        string steady = settings.HybridSteadyAfter > TimeSpan.Zero
            ? string.Create(CultureInfo.InvariantCulture, $", and whose measured part starts at least {settings.HybridSteadyAfter.TotalSeconds:F0} s into a window")
            : string.Empty;
        text.AppendLine(CultureInfo.InvariantCulture,
            $"**Layered policy, {RedisBenchSettings.ManyKeys:N0} users** (per user: requests/min in a fixed window, tokens/min in a counter, tokens/day in a "
            + $"calendar budget; a global daily cost cap that every node reconciles into; each request reserves {PolicyLimiter.Estimate.Tokens} tokens and "
            + $"{PolicyLimiter.Estimate.Money} µ$, then reconciles {PolicyLimiter.Actual.Tokens} and {PolicyLimiter.Actual.Money}; latency is both; "
            + $"{settings.ManyKeysMeasure.TotalSeconds:F1} s measured after a warm-up of {settings.ManyKeysWarmUp.TotalSeconds:F1} s, "
            + $"{settings.ManyKeysHybridWarmUp.TotalSeconds:F1} s for hybrid, whose blocks go back after 10 s idle rather than the default 1 s{steady}):");
        text.AppendLine();
        AppendThroughputTable(text, "requests", rows, PolicyDesigns.Exact.Name);
        text.AppendLine();
        foreach (RedisThroughput row in rows.Where(row => row.MeasuredFrom is not null))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- {row.Design}: measured{MeasuredFrom(row)}");
        }

        text.AppendLine();
    }

    /// <summary>
    /// Where in its window a run's measured part began: with many keys a hybrid run measured just after a boundary, when
    /// every key's blocks start small again, sees more round trips and waits than one measured later in the window.
    /// </summary>
    private static string MeasuredFrom(RedisThroughput row) => row.MeasuredFrom is { } phase
        ? string.Create(CultureInfo.InvariantCulture, $" (from {phase.TotalSeconds:F1} s into its {RedisHarness.ThroughputWindow.TotalSeconds:F0} s window)")
        : string.Empty;

    /// <summary>One throughput table: a row per design, each against the exact mode's row (named <paramref name="exactName"/>).</summary>
    private static void AppendThroughputTable(StringBuilder text, string unit, IEnumerable<RedisThroughput> rows, string exactName)
    {
        text.AppendLine(CultureInfo.InvariantCulture,
            $"| design | {unit}/s, all nodes | × exact | commands per 1,000 {unit} | round trips per 1,000 | latency p50 | p99 | answered without waiting | their p50 | their p99 |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        RedisThroughput exact = rows.Single(row => row.Design == exactName);
        foreach (RedisThroughput row in rows)
        {
            text.AppendLine(Row(row, exact));
        }
    }

    private static void AppendTargets(StringBuilder text, RedisResult result, RedisBenchSettings settings)
    {
        text.AppendLine("Issue 11's targets for the hybrid mode:");
        text.AppendLine();
        if (settings.ManyKeysHybridWarmUp < TimeSpan.FromSeconds(10))
        {
            // The compare mode's short runs: on 10k keys the hybrid mode is still growing its blocks, so its figures there
            // are its ramp, not the steady state the targets are about.
            text.AppendLine(CultureInfo.InvariantCulture,
                $"- (short runs: after {settings.ManyKeysHybridWarmUp.TotalSeconds:F1} s the hybrid mode's 10k-key blocks are still growing; `--redis` warms it up 20 s for its steady state)");
        }

        foreach (IGrouping<int, RedisThroughput> scenario in result.Throughput.GroupBy(row => row.Keys))
        {
            RedisThroughput hybrid = scenario.Single(row => row.Design == RedisDesign.Hybrid.Name);
            RedisThroughput exact = scenario.Single(row => row.Design == RedisDesign.Exact.Name);
            RedisThroughput inProcess = scenario.Single(row => row.Design == RedisDesign.InProcess.Name);
            double ratio = hybrid.AdmissionsPerSecond / exact.AdmissionsPerSecond;
            string trips = Number(hybrid.RoundTripsPerThousand);
            string p50 = string.Create(CultureInfo.InvariantCulture,
                $"p50 {Micros(hybrid.LocalP50Microseconds)} vs {Micros(inProcess.LocalP50Microseconds)} ({hybrid.LocalP50Microseconds / inProcess.LocalP50Microseconds:F2}×, {Verdict(hybrid.LocalP50Microseconds <= 2 * inProcess.LocalP50Microseconds)})");
            string p99 = string.Create(CultureInfo.InvariantCulture,
                $"p99 {Micros(hybrid.LocalP99Microseconds)} vs {Micros(inProcess.LocalP99Microseconds)} ({hybrid.LocalP99Microseconds / inProcess.LocalP99Microseconds:F2}×, {Verdict(hybrid.LocalP99Microseconds <= 2 * inProcess.LocalP99Microseconds)})");
            text.AppendLine(CultureInfo.InvariantCulture,
                $"- {Keys(scenario.Key)}: round trips per 1,000 admissions at most 10: {trips} ({Verdict(hybrid.RoundTripsPerThousand <= 10)}); throughput at least 100× exact mode's: {ratio:F1}× ({Verdict(ratio >= 100)}); locally served latency within 2× the in-process limiter's: {p50}, {p99}");
        }

        foreach (RedisSaturation row in result.Saturation.Where(row => row.Design == RedisDesign.Hybrid.Name))
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"- {Keys(row.Keys)} at saturation: over-admissions 0: {row.OverMax} ({Verdict(row.OverMax == 0)}); under-admission at most 2 % of the cap: {row.UnderShare:P1} ({Verdict(row.UnderShare <= 0.02)})");
        }

        text.AppendLine();
    }

    private static string Row(RedisThroughput row, RedisThroughput exact) => string.Create(CultureInfo.InvariantCulture,
        $"| {row.Design} | {Rate(row.AdmissionsPerSecond)} | {row.AdmissionsPerSecond / exact.AdmissionsPerSecond:F1}× | {Number(row.CommandsPerThousand)} | {Number(row.RoundTripsPerThousand)} | {Micros(row.P50Microseconds)} | {Micros(row.P99Microseconds)} | {row.LocalShare:P1} | {Micros(row.LocalP50Microseconds)} | {Micros(row.LocalP99Microseconds)} |");

    private static string Verdict(bool met) => met ? "met" : "missed";

    private static string Keys(int keys) => keys == 1 ? "One key" : $"{keys:N0} keys";

    private static string Rate(double perSecond) => perSecond >= 1e6
        ? (perSecond / 1e6).ToString("F2", CultureInfo.InvariantCulture) + " M"
        : (perSecond / 1e3).ToString("F1", CultureInfo.InvariantCulture) + " k";

    private static string Number(double value) => double.IsNaN(value) ? "–" : value.ToString(value < 100 ? "F1" : "N0", CultureInfo.InvariantCulture);

    private static string Micros(double value) => double.IsNaN(value)
        ? "–"
        : value.ToString(value < 10 ? "F2" : "F0", CultureInfo.InvariantCulture) + " µs";
}
