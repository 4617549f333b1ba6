using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Uncontended <c>AttemptAcquire(1)</c> + <c>Dispose</c>, admit and reject paths: the log and the counter against the
/// in-box <c>SlidingWindowRateLimiter</c>. The in-box limiter is the baseline of each category, so the Ratio column is
/// RateEngine's time over the in-box limiter's on the same path.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class UncontendedSlidingWindow : LimiterSuite
{
    [GlobalSetup]
    public void Setup() => SetUpAttempts(LimiterKind.InboxSliding, LimiterKind.Log, LimiterKind.Counter);

    [GlobalCleanup]
    public void Cleanup() => TearDown();

    [Benchmark(Baseline = true), BenchmarkCategory("Admit")]
    public bool InBoxSliding() => Admit<InboxSlidingAcquirer>();

    [Benchmark, BenchmarkCategory("Admit")]
    public bool Log() => Admit<LogAcquirer>();

    [Benchmark, BenchmarkCategory("Admit")]
    public bool Counter() => Admit<CounterAcquirer>();

    [Benchmark(Baseline = true), BenchmarkCategory("Reject")]
    public bool InBoxSliding_Reject() => Reject<InboxSlidingAcquirer>();

    [Benchmark, BenchmarkCategory("Reject")]
    public bool Log_Reject() => Reject<LogAcquirer>();

    [Benchmark, BenchmarkCategory("Reject")]
    public bool Counter_Reject() => Reject<CounterAcquirer>();
}
