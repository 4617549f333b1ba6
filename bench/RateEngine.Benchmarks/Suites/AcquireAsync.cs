using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

// AcquireAsync with queueing on (QueueLimit > 0), one class per in-box limiter, the in-box limiter as each category's
// baseline. "Admit": permits are free, so the call completes synchronously, but the limiter must still honour the queue.
// "QueueEvict": the limiter is exhausted and its one-permit NewestFirst queue is full, so every call enqueues a waiter
// and evicts the previous one: the queue's whole bookkeeping, measured without waiting for time to pass.

/// <summary>Queueing <c>AcquireAsync</c>: the log and the counter against the in-box <c>SlidingWindowRateLimiter</c>.</summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class AcquireAsyncSlidingWindow : LimiterSuite
{
    [GlobalSetup]
    public void Setup() => SetUpQueueing(LimiterKind.InboxSliding, LimiterKind.Log, LimiterKind.Counter);

    [GlobalCleanup]
    public void Cleanup() => TearDown();

    [Benchmark(Baseline = true), BenchmarkCategory("Admit")]
    public bool InBoxSliding() => AcquireAsyncAdmit(LimiterKind.InboxSliding);

    [Benchmark, BenchmarkCategory("Admit")]
    public bool Log() => AcquireAsyncAdmit(LimiterKind.Log);

    [Benchmark, BenchmarkCategory("Admit")]
    public bool Counter() => AcquireAsyncAdmit(LimiterKind.Counter);

    [Benchmark(Baseline = true), BenchmarkCategory("QueueEvict")]
    public bool InBoxSliding_QueueEvict() => AcquireAsyncQueueEvict(LimiterKind.InboxSliding);

    [Benchmark, BenchmarkCategory("QueueEvict")]
    public bool Log_QueueEvict() => AcquireAsyncQueueEvict(LimiterKind.Log);

    [Benchmark, BenchmarkCategory("QueueEvict")]
    public bool Counter_QueueEvict() => AcquireAsyncQueueEvict(LimiterKind.Counter);
}

/// <summary>Queueing <c>AcquireAsync</c>: <c>LockFreeFixedWindowRateLimiter</c> against the in-box <c>FixedWindowRateLimiter</c>.</summary>
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

/// <summary>Queueing <c>AcquireAsync</c>: <c>LockFreeTokenBucketRateLimiter</c> against the in-box <c>TokenBucketRateLimiter</c>.</summary>
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
