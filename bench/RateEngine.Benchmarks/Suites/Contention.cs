using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// One shared limiter driven by 1, 2 and 4 threads on the admit path. Each invocation runs <see cref="Operations"/>
/// attempts split evenly over the threads, so Mean is wall time per attempt and Op/s is the total throughput of all
/// threads together. The in-box limiter is the baseline of each category; "Ceiling" is bare <c>Interlocked.Increment</c>
/// on one shared counter, the most any limiter that updates one shared word per admission could do.
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory, BenchmarkLogicalGroupRule.ByParams)]
[CategoriesColumn]
public class Contention
{
    /// <summary>Attempts per invocation, over all threads (divisible by every thread count).</summary>
    public const int Operations = 1 << 18;

    private readonly RateLimiter?[] _limiters = new RateLimiter?[LimiterKinds.All.Length];
    private readonly Action<int>[] _bodies = new Action<int>[LimiterKinds.All.Length];
    private readonly SharedCounter _counter = new();
    private Action<int> _ceiling = null!;
    private ThreadTeam _team = null!;
    private long _wrongPath;

    [Params(1, 2, 4)]
    public int Threads { get; set; } = 1;

    [GlobalSetup]
    public void Setup()
    {
        _team = new ThreadTeam(Threads);
        long share = Operations / Threads;
        foreach (LimiterKind kind in LimiterKinds.All)
        {
            RateLimiter limiter = LimiterSetup.CreateAdmitting(kind);
            Func<RateLimiter, long, long> loop = Loops.For(kind);
            _limiters[(int)kind] = limiter;
            _bodies[(int)kind] = _ =>
            {
                long acquired = loop(limiter, share);
                if (acquired != share)
                {
                    Interlocked.Add(ref _wrongPath, share - acquired);
                }
            };
        }

        _ceiling = _ => Loops.Increment(_counter, share);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _team.Dispose();
        for (int i = 0; i < _limiters.Length; i++)
        {
            _limiters[i]?.Dispose();
            _limiters[i] = null;
        }

        long wrong = Interlocked.Exchange(ref _wrongPath, 0);
        Check.That(wrong == 0, $"Contention: {wrong} admit-path attempt(s) were rejected");
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("SlidingWindow")]
    public void InBoxSliding() => _team.Run(_bodies[(int)LimiterKind.InboxSliding]);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("SlidingWindow")]
    public void Log() => _team.Run(_bodies[(int)LimiterKind.Log]);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("SlidingWindow")]
    public void Counter() => _team.Run(_bodies[(int)LimiterKind.Counter]);

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("FixedWindow")]
    public void InBoxFixed() => _team.Run(_bodies[(int)LimiterKind.InboxFixed]);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("FixedWindow")]
    public void LockFreeFixed() => _team.Run(_bodies[(int)LimiterKind.LockFreeFixed]);

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("TokenBucket")]
    public void InBoxBucket() => _team.Run(_bodies[(int)LimiterKind.InboxBucket]);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("TokenBucket")]
    public void LockFreeBucket() => _team.Run(_bodies[(int)LimiterKind.LockFreeBucket]);

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Ceiling")]
    public void InterlockedCeiling() => _team.Run(_ceiling);
}
