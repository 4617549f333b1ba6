using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Uncontended, as <see cref="UncontendedSlidingWindow"/>: <c>LockFreeFixedWindowRateLimiter</c> against the in-box
/// <c>FixedWindowRateLimiter</c>.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class UncontendedFixedWindow : LimiterSuite
{
    [GlobalSetup]
    public void Setup() => SetUpAttempts(LimiterKind.InboxFixed, LimiterKind.LockFreeFixed);

    [GlobalCleanup]
    public void Cleanup() => TearDown();

    [Benchmark(Baseline = true), BenchmarkCategory("Admit")]
    public bool InBoxFixed() => Admit<InboxFixedAcquirer>();

    [Benchmark, BenchmarkCategory("Admit")]
    public bool LockFreeFixed() => Admit<LockFreeFixedAcquirer>();

    [Benchmark(Baseline = true), BenchmarkCategory("Reject")]
    public bool InBoxFixed_Reject() => Reject<InboxFixedAcquirer>();

    [Benchmark, BenchmarkCategory("Reject")]
    public bool LockFreeFixed_Reject() => Reject<LockFreeFixedAcquirer>();
}
