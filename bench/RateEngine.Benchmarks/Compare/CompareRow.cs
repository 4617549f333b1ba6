using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Compare;

/// <summary>One row of the compare table.</summary>
internal sealed record CompareRow(
    string Name,
    LimiterKind? Kind,
    Stat AdmitNanoseconds,
    Stat? RejectNanoseconds,
    Stat OneThreadOpsPerSecond,
    Stat TwoThreadOpsPerSecond,
    double AdmitBytesPerOperation,
    double? RejectBytesPerOperation,
    double TwoThreadBytesPerOperation,
    long TotalOperations)
{
    /// <summary>The 2-thread ops/s of each round, in round order: a ratio per round compares runs made minutes apart at most.</summary>
    public IReadOnlyList<double> TwoThreadRounds { get; init; } = [];
}
