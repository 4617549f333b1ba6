using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Uncontended, as <see cref="UncontendedSlidingWindow"/>: <c>LockFreeTokenBucketRateLimiter</c> against the in-box
/// <c>TokenBucketRateLimiter</c>.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class UncontendedTokenBucket : LimiterSuite
{
    [GlobalSetup]
    public void Setup() => SetUpAttempts(LimiterKind.InboxBucket, LimiterKind.LockFreeBucket);

    [GlobalCleanup]
    public void Cleanup() => TearDown();

    [Benchmark(Baseline = true), BenchmarkCategory("Admit")]
    public bool InBoxBucket() => Admit<InboxBucketAcquirer>();

    [Benchmark, BenchmarkCategory("Admit")]
    public bool LockFreeBucket() => Admit<LockFreeBucketAcquirer>();

    [Benchmark(Baseline = true), BenchmarkCategory("Reject")]
    public bool InBoxBucket_Reject() => Reject<InboxBucketAcquirer>();

    [Benchmark, BenchmarkCategory("Reject")]
    public bool LockFreeBucket_Reject() => Reject<LockFreeBucketAcquirer>();
}
