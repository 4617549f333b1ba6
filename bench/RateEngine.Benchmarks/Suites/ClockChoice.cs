using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects;
using RateEngine.Timing;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Issue 13's clock choice: what a clock read costs (<c>Stopwatch.GetTimestamp</c>, <c>Environment.TickCount64</c>,
/// <see cref="CoarseTimeProvider"/>, and <c>LimiterClock.Now</c> as the limiters read each), and one admit
/// (<c>AttemptAcquire(1)</c> + <c>Dispose</c>) of RateEngine's fixed window, sliding-window counter and token bucket on the
/// precise clock (<see cref="TimeProvider.System"/>) and on <see cref="CoarseTimeProvider.Shared"/>, each category with
/// the in-box limiter as its baseline. Limiter options are the admit path's (<see cref="LimiterSetup"/>).
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class ClockChoice
{
    private readonly RateLimiter?[] _precise = new RateLimiter?[LimiterKinds.All.Length];
    private readonly RateLimiter?[] _coarse = new RateLimiter?[LimiterKinds.All.Length];
    private LimiterClock _systemClock = null!;
    private LimiterClock _coarseClock = null!;
    private long _wrongPath;

    [GlobalSetup]
    public void Setup()
    {
        foreach (LimiterKind kind in new[] { LimiterKind.InboxFixed, LimiterKind.InboxSliding, LimiterKind.InboxBucket })
        {
            _precise[(int)kind] = LimiterSetup.CreateAdmitting(kind);
        }

        foreach (LimiterKind kind in new[] { LimiterKind.LockFreeFixed, LimiterKind.Counter, LimiterKind.LockFreeBucket })
        {
            _precise[(int)kind] = LimiterSetup.CreateAdmitting(kind, TimeProvider.System);
            _coarse[(int)kind] = LimiterSetup.CreateAdmitting(kind, CoarseTimeProvider.Shared);
        }

        _systemClock = new LimiterClock(TimeProvider.System);
        _coarseClock = new LimiterClock(CoarseTimeProvider.Shared);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (RateLimiter? limiter in _precise.Concat(_coarse))
        {
            limiter?.Dispose();
        }

        long wrong = Interlocked.Exchange(ref _wrongPath, 0);
        Check.That(wrong == 0, $"{nameof(ClockChoice)}: {wrong} attempt(s) were refused on the admit path");
    }

    // The clock reads.

    [Benchmark(Baseline = true), BenchmarkCategory("Clock")]
    public long Stopwatch_GetTimestamp() => Stopwatch.GetTimestamp();

    [Benchmark, BenchmarkCategory("Clock")]
    public long Environment_TickCount64() => Environment.TickCount64;

    [Benchmark, BenchmarkCategory("Clock")]
    public long Coarse_GetTimestamp() => CoarseTimeProvider.Shared.GetTimestamp();

    [Benchmark, BenchmarkCategory("Clock")]
    public long LimiterClock_Now_System() => _systemClock.Now();

    [Benchmark, BenchmarkCategory("Clock")]
    public long LimiterClock_Now_Coarse() => _coarseClock.Now();

    // One admit, in-box against RateEngine on each clock.

    [Benchmark(Baseline = true), BenchmarkCategory("Fixed")]
    public bool InBoxFixed() => Admit<InboxFixedAcquirer>(_precise);

    [Benchmark, BenchmarkCategory("Fixed")]
    public bool LockFreeFixed_Precise() => Admit<LockFreeFixedAcquirer>(_precise);

    [Benchmark, BenchmarkCategory("Fixed")]
    public bool LockFreeFixed_Coarse() => Admit<LockFreeFixedAcquirer>(_coarse);

    [Benchmark(Baseline = true), BenchmarkCategory("Sliding")]
    public bool InBoxSliding() => Admit<InboxSlidingAcquirer>(_precise);

    [Benchmark, BenchmarkCategory("Sliding")]
    public bool Counter_Precise() => Admit<CounterAcquirer>(_precise);

    [Benchmark, BenchmarkCategory("Sliding")]
    public bool Counter_Coarse() => Admit<CounterAcquirer>(_coarse);

    [Benchmark(Baseline = true), BenchmarkCategory("Bucket")]
    public bool InBoxBucket() => Admit<InboxBucketAcquirer>(_precise);

    [Benchmark, BenchmarkCategory("Bucket")]
    public bool LockFreeBucket_Precise() => Admit<LockFreeBucketAcquirer>(_precise);

    [Benchmark, BenchmarkCategory("Bucket")]
    public bool LockFreeBucket_Coarse() => Admit<LockFreeBucketAcquirer>(_coarse);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Admit<TAcquirer>(RateLimiter?[] limiters)
        where TAcquirer : struct, IAcquirer
    {
        RateLimitLease lease = TAcquirer.Acquire(limiters[(int)TAcquirer.Kind]!);
        bool acquired = lease.IsAcquired;
        lease.Dispose();
        if (!acquired)
        {
            _wrongPath++;
        }

        return acquired;
    }
}
