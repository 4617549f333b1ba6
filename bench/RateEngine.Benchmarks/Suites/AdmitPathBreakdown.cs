using System.Diagnostics;
using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;
using RateEngine.Algorithms;
using RateEngine.Benchmarks.Subjects;
using RateEngine.Limiters;
using RateEngine.Timing;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Where the single-thread admit path's time goes: each building block of RateEngine's <c>AttemptAcquire</c> timed alone
/// (through the internals the library shows this assembly), next to the full call and the in-box limiter. Algorithms get a
/// synthetic clock that moves 16 ticks per call, so they run their real admit path (windows roll over now and then) without
/// reading the system clock. Not a comparison suite: no baseline.
/// </summary>
[MemoryDiagnoser]
public class AdmitPathBreakdown
{
    private const long Step = 16;

    private readonly object _gate = new();
    private readonly SharedCounter _counter = new();
    private readonly StripedCounter _striped = new();
    private AlgorithmHost _fixed = null!;
    private AlgorithmHost _slidingCounter = null!;
    private AlgorithmHost _log = null!;
    private AlgorithmHost _bucket = null!;
    private LockFreeFixedWindowRateLimiter _limiter = null!;
    private FixedWindowRateLimiter _inbox = null!;
    private RateLimiter _exhausted = null!;
    private LimiterClock _clock = null!;
    private long _now;
    private int _locked;

    [GlobalSetup]
    public void Setup()
    {
        long second = Stopwatch.Frequency;
        _limiter = (LockFreeFixedWindowRateLimiter)LimiterSetup.CreateAdmitting(LimiterKind.LockFreeFixed);
        _inbox = (FixedWindowRateLimiter)LimiterSetup.CreateAdmitting(LimiterKind.InboxFixed);
        _exhausted = LimiterSetup.CreateExhausted(LimiterKind.LockFreeFixed);
        _clock = _limiter.Clock;
        _fixed = new AlgorithmHost<FixedWindow, long>(new FixedWindow(int.MaxValue, second));
        _slidingCounter = new AlgorithmHost<SlidingWindowCounter, CounterState>(new SlidingWindowCounter(int.MaxValue, second / 10, 10));
        _log = new AlgorithmHost<SlidingWindowLog, LogState>(new SlidingWindowLog(LimiterSetup.LogAdmitLimit, Math.Max(1, second / 1_000_000)));
        _bucket = new AlgorithmHost<TokenBucket, long>(new TokenBucket(int.MaxValue, int.MaxValue, second, _clock));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _limiter.Dispose();
        _inbox.Dispose();
        _exhausted.Dispose();
    }

    // The clock.

    [Benchmark]
    public long Stopwatch_GetTimestamp() => Stopwatch.GetTimestamp();

    [Benchmark]
    public long Environment_TickCount64() => Environment.TickCount64;

    [Benchmark]
    public long LimiterClock_Now() => _clock.Now();

    /// <summary>What every rejection pays to turn RETRY_AFTER ticks into a TimeSpan (Int128 arithmetic).</summary>
    [Benchmark]
    public TimeSpan TimeMath_ToTimeSpan() => TimeMath.ToTimeSpan(_now += Step, Stopwatch.Frequency);

    // Synchronization primitives, uncontended.

    [Benchmark]
    public long Interlocked_Increment() => Interlocked.Increment(ref _counter.Value);

    [Benchmark]
    public int Lock_EnterExit()
    {
        lock (_gate)
        {
            return ++_locked;
        }
    }

    [Benchmark]
    public void StripedCounter_Increment() => _striped.Increment();

    [Benchmark]
    public int Thread_GetCurrentProcessorId() => Thread.GetCurrentProcessorId();

    // Each algorithm's admit through its host (one virtual call, the CAS loop), without clock, statistics or lease.

    [Benchmark]
    public bool Algorithm_FixedWindow() => _fixed.TryAcquire(_now += Step, 1, out _, out _);

    [Benchmark]
    public bool Algorithm_SlidingWindowCounter() => _slidingCounter.TryAcquire(_now += Step, 1, out _, out _);

    [Benchmark]
    public bool Algorithm_SlidingWindowLog() => _log.TryAcquire(_now += Step, 1, out _, out _);

    [Benchmark]
    public bool Algorithm_TokenBucket() => _bucket.TryAcquire(_now += Step, 1, out _, out _);

    // The limiter's layers: TryAdmit (queue check, algorithm, statistics) with and without the clock, then the public call.

    [Benchmark]
    public bool FixedWindow_TryAdmit_SyntheticClock() => _limiter.TryAdmit(_now += Step, 1, out _);

    [Benchmark]
    public bool FixedWindow_TryAdmit_SystemClock() => _limiter.TryAdmit(_clock.Now(), 1, out _);

    [Benchmark]
    public bool FixedWindow_AttemptAcquire_Dispose()
    {
        RateLimitLease lease = _limiter.AttemptAcquire(1);
        bool acquired = lease.IsAcquired;
        lease.Dispose();
        return acquired;
    }

    [Benchmark]
    public bool FixedWindow_Reject_AttemptAcquire_Dispose()
    {
        RateLimitLease lease = _exhausted.AttemptAcquire(1);
        bool acquired = lease.IsAcquired;
        lease.Dispose();
        return acquired;
    }

    [Benchmark]
    public bool InBoxFixedWindow_AttemptAcquire_Dispose()
    {
        RateLimitLease lease = _inbox.AttemptAcquire(1);
        bool acquired = lease.IsAcquired;
        lease.Dispose();
        return acquired;
    }
}
