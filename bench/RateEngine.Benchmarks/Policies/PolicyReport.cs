using System.Globalization;
using System.Text;
using RateEngine.Benchmarks.Compare;

namespace RateEngine.Benchmarks.Policies;

/// <summary>The layered-policy table, its target verdicts, and its compare.md section.</summary>
internal static class PolicyReport
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string Table(PolicyResult result) => MarkdownTable.Render(
        ["subject", "ns/op (1 thr)", "× faster than chain", "ops/s, 2 thr, shared", "2 thr × chain", "B/op"],
        [false, true, true, true, true, true],
        [.. new[] { result.InBox, result.Acquire, result.AcquireReconcile }.Select(row => new[]
        {
            row.Name,
            row.Nanoseconds.Median.ToString("F0", Invariant),
            (result.InBox.Nanoseconds.Median / row.Nanoseconds.Median).ToString("F2", Invariant) + "×",
            Rate(row.TwoThreadOpsPerSecond.Median),
            (row.TwoThreadOpsPerSecond.Median / result.InBox.TwoThreadOpsPerSecond.Median).ToString("F2", Invariant) + "×",
            row.BytesPerOperation.ToString("F0", Invariant),
        })]);

    public static IEnumerable<string> Verdicts(PolicyResult result)
    {
        yield return Verdict("1 thread: RateEngine's 5-layer acquire at least 5× faster than the in-box chain", result.SingleThreadRatio);
        yield return Verdict("2 threads: RateEngine's total ops/s at least 5× the in-box chain's", result.TwoThreadRatio);
    }

    public static void AppendSection(StringBuilder text, PolicyResult result)
    {
        text.AppendLine("## Layered policy: five layers against five chained in-box limiters");
        text.AppendLine();
        text.AppendLine("Issue 10's policy (ip, user, tool, tokens per minute, daily cents) for 10,000 users (each with its own IP) and 8");
        text.AppendLine("tools, requests in a seeded random order, limits no run exhausts: RateEngine's `RatePolicy` (`Acquire` with an");
        text.AppendLine("estimate of 500 tokens and 2,500 micro-dollars, then `Dispose`; and with a `Reconcile` in between) against");
        text.AppendLine("`PartitionedRateLimiter.CreateChained` over five `PartitionedRateLimiter.Create` limiters with the same windows");
        text.AppendLine("(`AttemptAcquire` + `Dispose`). The chain cannot weigh tokens or money per layer, nor undo a layer when a later one");
        text.AppendLine("refuses; the policy does both. Medians of " + result.Rounds.ToString(Invariant) + " interleaved rounds; B/op on the measuring thread.");
        text.AppendLine();
        text.AppendLine(Table(result));
        text.AppendLine();
        text.AppendLine(MarkdownTable.Render(
            ["subject", "ns/op min – max", "2 thr ops/s min – max", "operations"],
            [false, true, true, true],
            [.. new[] { result.InBox, result.Acquire, result.AcquireReconcile }.Select(row => new[]
            {
                row.Name,
                $"{row.Nanoseconds.Min.ToString("F0", Invariant)} – {row.Nanoseconds.Max.ToString("F0", Invariant)}",
                $"{Rate(row.TwoThreadOpsPerSecond.Min)} – {Rate(row.TwoThreadOpsPerSecond.Max)}",
                row.Operations.ToString("N0", Invariant),
            })]));
        text.AppendLine();
        double cachedRatio = result.CachedInBox.Median / result.CachedAcquire.Median;
        text.AppendLine("**What bounds the ratio.** The same subjects on " + PolicySubjects.CachedUsers.ToString(Invariant)
            + " users, one thread, where every key's state of both sides stays in the cache: in-box "
            + result.CachedInBox.Median.ToString("F0", Invariant) + " ns, RateEngine " + result.CachedAcquire.Median.ToString("F0", Invariant)
            + " ns (" + cachedRatio.ToString("F2", Invariant) + "×). On 10k users the chain slows by "
            + (result.InBox.Nanoseconds.Median - result.CachedInBox.Median).ToString("F0", Invariant) + " ns a request and the policy by "
            + (result.Acquire.Nanoseconds.Median - result.CachedAcquire.Median).ToString("F0", Invariant)
            + " ns: cache misses on state that no longer fits. A 5× ratio on 10k users needs the policy at "
            + (result.InBox.Nanoseconds.Median / 5).ToString("F0", Invariant) + " ns, "
            + (result.InBox.Nanoseconds.Median / 5 <= result.CachedAcquire.Median ? "no more than" : "only "
                + (result.InBox.Nanoseconds.Median / 5 - result.CachedAcquire.Median).ToString("F0", Invariant) + " ns above")
            + " what it costs with every key in the cache. Resident state after one pass over the requests (every key and (user, tool)"
            + " pair the runs use): the chain " + Megabytes(result.InBoxBytesPerUser) + ", the policy " + Megabytes(result.PolicyBytesPerUser)
            + ", and the key strings both read " + Megabytes(result.KeyBytesPerUser)
            + ". How far each side slows on 10k users follows from where its footprint falls on the curve of one dependent load by footprint (machine details above).");
        text.AppendLine();
        text.AppendLine("Targets (bench/README.md):");
        text.AppendLine();
        foreach (string verdict in Verdicts(result))
        {
            text.AppendLine("- " + verdict);
        }

        text.AppendLine();
    }

    private static string Verdict(string target, double ratio) =>
        $"{target}: {ratio.ToString("F2", Invariant)}× — {(ratio >= 5 ? "met" : $"missed by {(5 / ratio).ToString("F2", Invariant)}×")}";

    /// <summary>"750 B per user (7.5 MB for 10,000)".</summary>
    private static string Megabytes(double bytesPerUser) =>
        $"{bytesPerUser.ToString("F0", Invariant)} B per user ({(bytesPerUser * PolicySubjects.Users / 1e6).ToString("F1", Invariant)} MB for {PolicySubjects.Users.ToString("N0", Invariant)})";

    private static string Rate(double perSecond) => (perSecond / 1e6).ToString("F2", Invariant) + " M";
}
