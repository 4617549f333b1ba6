using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Queueing <c>AcquireAsync</c>, as <see cref="AcquireAsyncSlidingWindow"/>: <c>LockFreeFixedWindowRateLimiter</c>
/// against the in-box <c>FixedWindowRateLimiter</c>.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class AcquireAsyncFixedWindow : LimiterSuite
{
    [GlobalSetup]
    public void Setup() => SetUpQueueing(LimiterKind.InboxFixed, LimiterKind.LockFreeFixed);

    [GlobalCleanup]
    public void Cleanup() => TearDown();

    [Benchmark(Baseline = true), BenchmarkCategory("Admit")]
    public bool InBoxFixed() => AcquireAsyncAdmit(LimiterKind.InboxFixed);

    [Benchmark, BenchmarkCategory("Admit")]
    public bool LockFreeFixed() => AcquireAsyncAdmit(LimiterKind.LockFreeFixed);

    [Benchmark(Baseline = true), BenchmarkCategory("QueueEvict")]
    public bool InBoxFixed_QueueEvict() => AcquireAsyncQueueEvict(LimiterKind.InboxFixed);

    [Benchmark, BenchmarkCategory("QueueEvict")]
    public bool LockFreeFixed_QueueEvict() => AcquireAsyncQueueEvict(LimiterKind.LockFreeFixed);
}
