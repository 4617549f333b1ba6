using RateEngine.Benchmarks.Simulations;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Compare;

/// <summary>Everything the report needs.</summary>
internal sealed record CompareResult(
    MachineInfo Machine, CompareSettings Settings, IReadOnlyList<CompareRow> Rows, PartitionResult? Partitions, TimeSpan Duration)
{
    /// <summary>The estimator simulation's section (seeded, virtual clock), appended after the partitions.</summary>
    public EstimatorResult? Estimator { get; init; }

    /// <summary>The layered-policy section (a 5-layer policy against the in-box chain), after the partitions.</summary>
    public Policies.PolicyResult? Policy { get; init; }

    /// <summary>The short Redis section (as <c>--redis</c>, shorter), when redis-server is on PATH.</summary>
    public Redis.RedisResult? Redis { get; init; }

    public CompareRow Ceiling => Rows.Single(r => r.Kind is null);

    public CompareRow Row(LimiterKind kind) => Rows.Single(r => r.Kind == kind);
}
