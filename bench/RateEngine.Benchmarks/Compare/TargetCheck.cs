using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Compare;

/// <summary>One target (bench/README.md, Targets) and how the run did against it.</summary>
internal sealed record TargetCheck(LimiterKind Kind, string Target, string Measured, bool Met, string Verdict);
