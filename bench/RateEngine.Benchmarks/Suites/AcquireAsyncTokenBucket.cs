using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Queueing <c>AcquireAsync</c>, as <see cref="AcquireAsyncSlidingWindow"/>: <c>LockFreeTokenBucketRateLimiter</c>
/// against the in-box <c>TokenBucketRateLimiter</c>.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class AcquireAsyncTokenBucket : LimiterSuite
{
    [GlobalSetup]
    public void Setup() => SetUpQueueing(LimiterKind.InboxBucket, LimiterKind.LockFreeBucket);

    [GlobalCleanup]
    public void Cleanup() => TearDown();

    [Benchmark(Baseline = true), BenchmarkCategory("Admit")]
    public bool InBoxBucket() => AcquireAsyncAdmit(LimiterKind.InboxBucket);

    [Benchmark, BenchmarkCategory("Admit")]
    public bool LockFreeBucket() => AcquireAsyncAdmit(LimiterKind.LockFreeBucket);

    [Benchmark(Baseline = true), BenchmarkCategory("QueueEvict")]
    public bool InBoxBucket_QueueEvict() => AcquireAsyncQueueEvict(LimiterKind.InboxBucket);

    [Benchmark, BenchmarkCategory("QueueEvict")]
    public bool LockFreeBucket_QueueEvict() => AcquireAsyncQueueEvict(LimiterKind.LockFreeBucket);
}
