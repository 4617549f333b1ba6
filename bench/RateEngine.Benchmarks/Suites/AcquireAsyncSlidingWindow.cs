using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// <c>AcquireAsync</c> with queueing on (<c>QueueLimit</c> &gt; 0): the log and the counter against the in-box
/// <c>SlidingWindowRateLimiter</c>, the baseline of each category.
/// </summary>
/// <remarks>
/// "Admit": permits are free, so the call completes synchronously, but the limiter must still honour the queue.
/// "QueueEvict": the limiter is exhausted and its one-permit NewestFirst queue is full, so every call enqueues a waiter
/// and evicts the previous one: the queue's whole bookkeeping, measured without waiting for time to pass.
/// </remarks>
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
