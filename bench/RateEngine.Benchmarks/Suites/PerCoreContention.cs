using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Issue 13's shared limiters that scale with cores: one limiter shared by two threads on the admit path, the in-box
/// limiter (baseline of each category) against RateEngine's with per-core blocks on the precise and on the coarse clock
/// (the log, part 1's next best, against the in-box sliding window, as the log is judged).
/// Each invocation runs <see cref="Operations"/> attempts split over the threads, so Op/s is total throughput; the
/// <c>Contention</c> suite has the same limiters without blocks and the Interlocked ceiling.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class PerCoreContention
{
    /// <summary>Attempts per invocation, over both threads.</summary>
    public const int Operations = 1 << 18;

    private const int Threads = 2;

    private readonly List<RateLimiter> _limiters = [];
    private ThreadTeam _team = null!;
    private long _wrongPath;
    private Action<int> _inBoxForLog = null!, _logPrecise = null!, _logCoarse = null!;
    private Action<int> _inBoxFixed = null!, _fixedPrecise = null!, _fixedCoarse = null!;
    private Action<int> _inBoxSliding = null!, _counterPrecise = null!, _counterCoarse = null!;
    private Action<int> _inBoxBucket = null!, _bucketPrecise = null!, _bucketCoarse = null!;

    [GlobalSetup]
    public void Setup()
    {
        _team = new ThreadTeam(Threads);
        _inBoxForLog = Body(LimiterKind.InboxSliding, LimiterSetup.CreateAdmitting(LimiterKind.InboxSliding));
        _logPrecise = Body(LimiterKind.PerCoreLog, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.Log, TimeProvider.System));
        _logCoarse = Body(LimiterKind.PerCoreLog, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.Log, CoarseTimeProvider.Shared));
        _inBoxFixed = Body(LimiterKind.InboxFixed, LimiterSetup.CreateAdmitting(LimiterKind.InboxFixed));
        _fixedPrecise = Body(LimiterKind.LockFreeFixed, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.LockFreeFixed, TimeProvider.System));
        _fixedCoarse = Body(LimiterKind.LockFreeFixed, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.LockFreeFixed, CoarseTimeProvider.Shared));
        _inBoxSliding = Body(LimiterKind.InboxSliding, LimiterSetup.CreateAdmitting(LimiterKind.InboxSliding));
        _counterPrecise = Body(LimiterKind.Counter, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.Counter, TimeProvider.System));
        _counterCoarse = Body(LimiterKind.Counter, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.Counter, CoarseTimeProvider.Shared));
        _inBoxBucket = Body(LimiterKind.InboxBucket, LimiterSetup.CreateAdmitting(LimiterKind.InboxBucket));
        _bucketPrecise = Body(LimiterKind.LockFreeBucket, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.LockFreeBucket, TimeProvider.System));
        _bucketCoarse = Body(LimiterKind.LockFreeBucket, LimiterSetup.CreatePerCoreAdmitting(LimiterKind.LockFreeBucket, CoarseTimeProvider.Shared));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _team.Dispose();
        _limiters.ForEach(limiter => limiter.Dispose());
        _limiters.Clear();
        long wrong = Interlocked.Exchange(ref _wrongPath, 0);
        Check.That(wrong == 0, $"PerCoreContention: {wrong} admit-path attempt(s) were rejected");
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("SlidingLog")]
    public void InBoxSlidingForLog() => _team.Run(_inBoxForLog);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("SlidingLog")]
    public void PerCoreLogPrecise() => _team.Run(_logPrecise);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("SlidingLog")]
    public void PerCoreLogCoarse() => _team.Run(_logCoarse);

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("FixedWindow")]
    public void InBoxFixed() => _team.Run(_inBoxFixed);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("FixedWindow")]
    public void PerCoreFixedPrecise() => _team.Run(_fixedPrecise);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("FixedWindow")]
    public void PerCoreFixedCoarse() => _team.Run(_fixedCoarse);

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("SlidingWindow")]
    public void InBoxSliding() => _team.Run(_inBoxSliding);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("SlidingWindow")]
    public void PerCoreCounterPrecise() => _team.Run(_counterPrecise);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("SlidingWindow")]
    public void PerCoreCounterCoarse() => _team.Run(_counterCoarse);

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("TokenBucket")]
    public void InBoxBucket() => _team.Run(_inBoxBucket);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("TokenBucket")]
    public void PerCoreBucketPrecise() => _team.Run(_bucketPrecise);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("TokenBucket")]
    public void PerCoreBucketCoarse() => _team.Run(_bucketCoarse);

    /// <summary>One thread's share of the attempts on <paramref name="limiter"/>, through the loop compiled for its type.</summary>
    private Action<int> Body(LimiterKind kind, RateLimiter limiter)
    {
        _limiters.Add(limiter);
        Func<RateLimiter, long, long> loop = Loops.For(kind);
        long share = Operations / Threads;
        return _ =>
        {
            long acquired = loop(limiter, share);
            if (acquired != share)
            {
                Interlocked.Add(ref _wrongPath, share - acquired);
            }
        };
    }
}
