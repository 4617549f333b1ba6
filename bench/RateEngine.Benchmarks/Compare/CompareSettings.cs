using RateEngine.Benchmarks.Subjects.Partitions;

namespace RateEngine.Benchmarks.Compare;

/// <summary>How long and how often the compare mode measures, and where it writes.</summary>
internal sealed record CompareSettings
{
    /// <summary>
    /// Timed rounds per measurement; the report takes the median. Nine: in eleven-round runs the median moved by under 2 %
    /// between rounds 9 and 11 (issue 13 asks the main command to fit two minutes).
    /// </summary>
    public int Rounds { get; init; } = 9;

    /// <summary>Length of one single-thread timed run (admit or reject path).</summary>
    public TimeSpan SingleThreadRound { get; init; } = TimeSpan.FromMilliseconds(80);

    /// <summary>
    /// Length of one multi-thread timed run (120 ms: a 2-thread run settles within its first few ms; the log with per-core
    /// blocks made the table a row longer, and the main command must keep to two minutes).
    /// </summary>
    public TimeSpan ThreadedRound { get; init; } = TimeSpan.FromMilliseconds(120);

    /// <summary>Warm-up per limiter and path, done twice over all limiters so that every loop reaches tier-1 code.</summary>
    public TimeSpan WarmUp { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Attempts between two checks of the stop flag in threaded runs.</summary>
    public long Batch { get; init; } = 1_000;

    /// <summary>First-touch (and memory) rounds of the partition section (0 skips the section); the report takes the median.</summary>
    public int PartitionRounds { get; init; } = 3;

    /// <summary>Hot-key rounds of the partition section: cheaper than first touch and noisier, so more of them.</summary>
    public int PartitionHotRounds { get; init; } = 5;

    /// <summary>
    /// New keys per first-touch run, which is also the memory measurement: 250,000 (a million made the partition section
    /// 107 of the main command's 186 s; B/key moves with where the count falls in the shards' growth either way).
    /// </summary>
    public int PartitionKeys { get; init; } = 250_000;

    /// <summary>Warm-up per partitioned limiter (half first touch, half hot keys), done twice over all of them.</summary>
    public TimeSpan PartitionWarmUp { get; init; } = TimeSpan.FromMilliseconds(120);

    /// <summary>Families of the partition section.</summary>
    public IReadOnlyList<PartitionFamily> PartitionFamilies { get; init; } = Subjects.Partitions.PartitionFamilies.All;

    /// <summary>Rounds of the layered-policy section (0 skips it); the report takes the median.</summary>
    public int PolicyRounds { get; init; } = 5;

    public required string OutputDirectory { get; init; }

    public bool IsSmoke { get; init; }

    public static CompareSettings Smoke(string outputDirectory) => new()
    {
        Rounds = 2,
        SingleThreadRound = TimeSpan.FromMilliseconds(5),
        ThreadedRound = TimeSpan.FromMilliseconds(20),
        WarmUp = TimeSpan.FromMilliseconds(5),
        Batch = 200,
        PartitionRounds = 1,
        PartitionHotRounds = 1,
        PartitionKeys = 5_000,
        PartitionWarmUp = TimeSpan.FromMilliseconds(10),
        PolicyRounds = 1,
        OutputDirectory = outputDirectory,
        IsSmoke = true,
    };
}
