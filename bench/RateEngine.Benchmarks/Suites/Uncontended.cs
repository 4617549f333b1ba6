using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

// Uncontended AttemptAcquire(1) + Dispose, one class per in-box limiter. The in-box limiter is the baseline of each
// category, so the Ratio column is RateEngine's time over the in-box limiter's on the same path.

/// <summary>The log and the counter against the in-box <c>SlidingWindowRateLimiter</c>.</summary>
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

/// <summary><c>LockFreeFixedWindowRateLimiter</c> against the in-box <c>FixedWindowRateLimiter</c>.</summary>
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

/// <summary><c>LockFreeTokenBucketRateLimiter</c> against the in-box <c>TokenBucketRateLimiter</c>.</summary>
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
