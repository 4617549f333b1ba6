using System.Text;
using RateEngine.Benchmarks.Subjects.Partitions;
using static RateEngine.Benchmarks.Compare.Cells;

namespace RateEngine.Benchmarks.Compare;

/// <summary>The partition section of the report: its table, its targets and how it measured.</summary>
internal static class PartitionReport
{
    private static readonly string[] Header =
    [
        "family",
        "keys",
        "B/key in-box",
        "B/key RateEngine",
        "× in-box",
        "B/key with key strings, in-box / RateEngine",
        "first touch keys/s in-box",
        "first touch RateEngine",
        "× in-box",
        "hot keys ops/s in-box (2 thr)",
        "hot keys RateEngine",
        "× in-box",
    ];

    private static readonly bool[] RightAligned = [false, false, true, true, true, true, true, true, true, true, true, true];

    public static string Table(PartitionResult result) => MarkdownTable.Render(
        Header,
        RightAligned,
        [.. result.Rows.Select(row =>
        {
            double keyBytes = result.KeyBytes[row.KeyKind];
            return new[]
            {
                row.Family.TableName(),
                row.KeyKind.Name(),
                Bytes(row.Inbox.ResidentBytesPerKey.Median),
                Bytes(row.Engine.ResidentBytesPerKey.Median),
                Ratio(row.Engine.ResidentBytesPerKey.Median / row.Inbox.ResidentBytesPerKey.Median),
                keyBytes == 0 ? "(inline)" : $"{Bytes(row.Inbox.ResidentBytesPerKey.Median + keyBytes)} / {Bytes(row.Engine.ResidentBytesPerKey.Median + keyBytes)}",
                Rate(row.Inbox.FirstTouchKeysPerSecond.Median),
                Rate(row.Engine.FirstTouchKeysPerSecond.Median),
                Ratio(row.Engine.FirstTouchKeysPerSecond.Median / row.Inbox.FirstTouchKeysPerSecond.Median),
                Rate(row.Inbox.HotOpsPerSecond.Median),
                Rate(row.Engine.HotOpsPerSecond.Median),
                Ratio(row.Engine.HotOpsPerSecond.Median / row.Inbox.HotOpsPerSecond.Median),
            };
        })]);

    /// <summary>Each pair against the three partition <see cref="Compare.Targets"/>.</summary>
    public static string TargetsTable(PartitionResult result) => MarkdownTable.Render(
        ["family", "keys", $"≤ {Targets.IntKeyBytes:0} B/key (int keys)", $"first touch ≥ {Targets.PartitionRate:0}× in-box", $"hot keys ≥ {Targets.PartitionRate:0}× in-box"],
        [false, false, false, false, false],
        [.. result.Rows.Select(row => new[]
        {
            row.Family.TableName(),
            row.KeyKind.Name(),
            MemoryVerdict(row),
            RateVerdict(row.Engine.FirstTouchKeysPerSecond.Median / row.Inbox.FirstTouchKeysPerSecond.Median),
            RateVerdict(row.Engine.HotOpsPerSecond.Median / row.Inbox.HotOpsPerSecond.Median),
        })]);

    public static void AppendSection(StringBuilder text, CompareResult compare)
    {
        PartitionResult result = compare.Partitions!;
        CompareSettings s = compare.Settings;
        text.AppendLine("## Partitioned limiters");
        text.AppendLine();
        text.AppendLine(Invariant, $"RateEngine's `PartitionedLimiter.Create*` against the in-box `PartitionedRateLimiter.Create` with `RateLimitPartition.Get*Limiter`, {result.Keys:N0} distinct keys per first-touch run, {PartitionSetup.HotKeys:N0} hot keys. Sliding window: RateEngine's counter against the in-box `SlidingWindowRateLimiter`.");
        text.AppendLine();
        text.AppendLine(Table(result));
        text.AppendLine();
        text.AppendLine("How to read it:");
        text.AppendLine();
        text.AppendLine("- **B/key**: resident bytes per key: `GC.GetTotalMemory(true)` after the keys were touched (limiter alive) minus before the");
        text.AppendLine("  limiter was created, over the keys. It holds everything the limiter keeps for its keys: per-key state and limiter");
        text.AppendLine("  objects, the table or dictionary, the in-box limiter's heartbeat list of partitions, and the limiter's fixed cost spread");
        text.AppendLine("  over the keys. It does **not** hold the key strings: they were made before the first reading (the caller holds them");
        text.AppendLine("  too). An int key is stored inline, so for int keys B/key is the whole cost. Lower is better; `× in-box` is RateEngine's");
        text.AppendLine("  bytes over the in-box limiter's. RateEngine's figure depends on where the key count falls in its shards' growth (a shard");
        text.AppendLine("  doubles its slots when 3/4 full, so its slots are 3/8 to 3/4 used): for int keys it moves between about 49 and 64 B as");
        text.AppendLine("  the key count changes (ANALYSIS.md).");
        text.AppendLine(Invariant, $"- **B/key with key strings**: B/key plus the measured size of one key string ({Bytes(result.KeyBytes[PartitionKeyKind.IPv4])} B for an IPv4 string, {Bytes(result.KeyBytes[PartitionKeyKind.IPv6])} B for an IPv6");
        text.AppendLine("  one): what a server holds per key when the limiter's reference is the only one left to the key string.");
        text.AppendLine("- **first touch**: new keys per second, one thread, one `AttemptAcquire(key)` + `Dispose` per key on a fresh limiter, so every");
        text.AppendLine("  attempt creates a key (including the garbage collections that creating them causes). `× in-box`: higher is better.");
        text.AppendLine("- **hot keys**: total admissions per second of 2 threads on one limiter that already holds the keys, each thread visiting the");
        text.AppendLine("  keys in its own random order. `× in-box`: higher is better.");
        text.AppendLine();
        text.AppendLine("### Targets, partitions (bench/README.md)");
        text.AppendLine();
        text.AppendLine(TargetsTable(result));
        text.AppendLine();
        text.AppendLine("### Method (partitions)");
        text.AppendLine();
        text.AppendLine(Invariant, $"- Keys: {result.Keys:N0} distinct random ints; distinct random dotted-quad IPv4 strings; distinct IPv6 strings in 2001:db8::/32 with 96 random bits as `IPAddress.ToString()` writes them. The same keys on both sides; made once, before anything is measured. Both sides use the default equality comparer (randomized string hashing).");
        text.AppendLine(Invariant, $"- Options, first touch and memory: every key keeps what it took for the whole run (`int.MaxValue` permits per {PartitionSetup.HeldWindow.TotalHours:F0} h window, 10 segments for the sliding windows; a {PartitionSetup.HeldTokenLimit:N0}-token bucket refilled one token per hour), so no key is idle and none is evicted on either side; RateEngine's `MaxPartitions` is {PartitionSetup.MaxPartitions:N0}, so none is refused. The harness checks that every attempt was admitted and that RateEngine's limiter holds exactly {result.Keys:N0} keys.");
        text.AppendLine("- Options, hot keys: the admit-path options of the single limiters above (`int.MaxValue` per 1 s; the bucket refills `int.MaxValue` tokens per second), which no run can exhaust; every attempt is checked to be admitted.");
        text.AppendLine("- One options instance per family on both sides, as an application with one limit for every key writes it (one tier on RateEngine's side; a cached, non-capturing options delegate on the in-box side, though `RateLimitPartition.Get*Limiter` still allocates per call).");
        text.AppendLine(Invariant, $"- Warm-up: twice over every limiter, {s.PartitionWarmUp.TotalMilliseconds / 2:F0} ms of fresh limiters with 20,000 new keys each, and {s.PartitionWarmUp.TotalMilliseconds / 2:F0} ms of hot keys, so that the loops and every path a new key takes run tier-1 code.");
        text.AppendLine(Invariant, $"- {Math.Max(s.PartitionRounds, s.PartitionHotRounds)} rounds; each visits every limiter (order rotated by one per round) for one {s.ThreadedRound.TotalMilliseconds:F0} ms hot-key run (in {s.PartitionHotRounds} rounds) on a new limiter that was given the hot keys first, and one first-touch run on a fresh limiter (in {s.PartitionRounds} rounds); each limiter is disposed after its run. The table shows the median round. Hot-key runs are cheap and the noisiest figure (2 threads on 2 cores: any other process takes a core from one of them), so they get more rounds.");
        text.AppendLine(Invariant, $"- The in-box limiter replenishes and sweeps its partitions from a 100 ms heartbeat that walks all of them and, after keys were added, copies the whole dictionary into a list under its lock. Its cost during first touch is part of the in-box rate; before reading memory the harness waits {PartitionHarness.HeartbeatSettle.TotalMilliseconds:F0} ms so that the list is in the figure, as it is in steady state.");
        text.AppendLine();
        text.AppendLine("### Spread over the rounds (partitions, min – max)");
        text.AppendLine();
        text.AppendLine(MarkdownTable.Render(
            ["family", "keys", "side", "B/key", "first touch keys/s", "B allocated per new key", "hot keys ops/s", "B allocated per hot attempt (whole process)"],
            [false, false, false, true, true, true, true, true],
            [.. result.Rows.SelectMany(row => new[] { (row, side: PartitionSide.Inbox, stats: row.Inbox), (row, side: PartitionSide.Engine, stats: row.Engine) })
                .Select(x => new[]
                {
                    x.row.Family.TableName(),
                    x.row.KeyKind.Name(),
                    x.side == PartitionSide.Inbox ? "in-box" : "RateEngine",
                    $"{Bytes(x.stats.ResidentBytesPerKey.Min)} – {Bytes(x.stats.ResidentBytesPerKey.Max)}",
                    $"{Rate(x.stats.FirstTouchKeysPerSecond.Min)} – {Rate(x.stats.FirstTouchKeysPerSecond.Max)}",
                    Bytes(x.stats.FirstTouchAllocatedBytesPerKey),
                    $"{Rate(x.stats.HotOpsPerSecond.Min)} – {Rate(x.stats.HotOpsPerSecond.Max)}",
                    Bytes(x.stats.HotAllocatedBytesPerOperation),
                })]));
        text.AppendLine();
    }

    private static string MemoryVerdict(PartitionRow row)
    {
        double bytes = row.Engine.ResidentBytesPerKey.Median;
        if (row.KeyKind != PartitionKeyKind.Int)
        {
            return $"(reported: {Bytes(bytes)} B)";
        }

        if (Targets.BytesPerIntKey(row.Family) is not { } target)
        {
            return $"not judged (segment slots): {Bytes(bytes)} B";
        }

        return bytes <= target
            ? $"met: {Bytes(bytes)} B ({target - bytes:F1} B to spare)"
            : $"missed: {Bytes(bytes)} B ({(bytes / target - 1) * 100:F0} % over)";
    }

    private static string RateVerdict(double ratio) => ratio >= Targets.PartitionRate
        ? $"met: {ratio:0.00}×"
        : $"missed: {ratio:0.00}× ({ratio / Targets.PartitionRate * 100:F0} % of the goal)";
}
