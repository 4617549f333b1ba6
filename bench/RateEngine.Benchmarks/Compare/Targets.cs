using RateEngine.Benchmarks.Subjects;
using RateEngine.Benchmarks.Subjects.Partitions;

namespace RateEngine.Benchmarks.Compare;

/// <summary>
/// Every target the compare mode judges, in one place. bench/README.md's Targets section lists them with the issue each
/// comes from; change both together. The verdicts are written by <see cref="CompareReport"/> and <see cref="PartitionReport"/>.
/// </summary>
internal static class Targets
{
    /// <summary>Bytes allocated per successful acquire, on the acquiring thread (issue 3).</summary>
    public const double AdmitBytes = 0;

    /// <summary>Resident bytes per int key, state plus table, at most (issue 4), where <see cref="BytesPerIntKey"/> judges it.</summary>
    public const double IntKeyBytes = 64;

    /// <summary>First touch and hot keys: RateEngine at least this many times the in-box rate (issue 4).</summary>
    public const double PartitionRate = 5.0;

    /// <summary>Single thread, admit: RateEngine's ns/op over the in-box limiter's, at most (issue 3); null for in-box limiters.</summary>
    public static double? Latency(LimiterKind kind) => kind switch
    {
        LimiterKind.Log => 1.5,
        LimiterKind.Counter or LimiterKind.LockFreeFixed or LimiterKind.LockFreeBucket => 0.5,
        _ => null,
    };

    /// <summary>
    /// 2 threads on one limiter: RateEngine's total ops/s over the in-box limiter's, at least (issue 3; the per-core log,
    /// issue 13 part 1, in every round); null for in-box limiters.
    /// </summary>
    public static double? Throughput(LimiterKind kind) => kind switch
    {
        LimiterKind.Log => 3.0,
        LimiterKind.PerCoreLog => 1.5,
        LimiterKind.Counter or LimiterKind.LockFreeFixed or LimiterKind.LockFreeBucket => 5.0,
        _ => null,
    };

    /// <summary>
    /// Single thread, admit, on <see cref="CoarseTimeProvider"/>: RateEngine's fixed window, counter and bucket at most
    /// this many times the in-box limiter's ns/op (issue 13, judged by <c>--clock</c>).
    /// </summary>
    public const double CoarseClockLatency = 0.8;

    /// <summary>True where the throughput target must hold in every round, not only in the median (issue 13 part 1).</summary>
    public static bool ThroughputEveryRound(LimiterKind kind) => kind == LimiterKind.PerCoreLog;

    /// <summary>
    /// Single thread, admit, on the precise clock: at most the in-box ns/op plus one <c>Stopwatch.GetTimestamp</c> (measured
    /// in the same run) plus this many ns (issue 13, judged by <c>--clock</c>).
    /// </summary>
    public const double PreciseClockAllowanceNanoseconds = 10;

    /// <summary>The <see cref="IntKeyBytes"/> target for <paramref name="family"/>, or null where it is reported but not judged.</summary>
    /// <remarks>The sliding-window counter keeps one 8-byte slot per segment (11 for 10 segments), so the 64-byte target,
    /// written for one-word state, is reported for it but not judged.</remarks>
    public static double? BytesPerIntKey(PartitionFamily family) => family == PartitionFamily.SlidingWindow ? null : IntKeyBytes;
}
