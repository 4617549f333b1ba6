using System.Diagnostics;
using System.Threading.RateLimiting;
using RateEngine.Partitioning;
using RateEngine.Timing;

namespace RateEngine.Tests.Support;

/// <summary>
/// What a multi-threaded run on a partitioned limiter admitted, per key, and the checks on it: every attempt counted, every
/// permit a lease handed out recorded, every admission stamped between its call's start and the observer's clock read
/// (the window check reads the stamps, so they must not be taken on trust: a block of a period that is over would carry
/// that period's stamp), and every key's admissions within its guarantee.
/// </summary>
internal sealed class KeyAdmissionRecorder : IDisposable
{
    private readonly IPartitionDiagnostics _diagnostics;
    private readonly ThreadLocal<List<(int Key, Admitted Admitted)>> _recorded = new(() => [], trackAllValues: true);
    private readonly ThreadLocal<long> _callStart = new();
    private long _misstamped;
    private long _refused;
    private long _granted;

    public KeyAdmissionRecorder(PartitionedRateLimiter<int> limiter)
    {
        _diagnostics = (IPartitionDiagnostics)limiter;
        _diagnostics.AdmissionObserver = (key, admission) =>
        {
            if (admission.Stamp < _callStart.Value || admission.Stamp > _diagnostics.Now())
            {
                Interlocked.Increment(ref _misstamped);
            }

            _recorded.Value!.Add(((int)key, new Admitted(admission.Stamp, admission.Permits)));
        };
    }

    /// <summary>One attempt on <paramref name="key"/>, its clock noted first; a refusal is counted.</summary>
    public void Attempt(PartitionedRateLimiter<int> limiter, int key, int permits = 1)
    {
        _callStart.Value = _diagnostics.Now();
        using RateLimitLease lease = limiter.AttemptAcquire(key, permits);
        if (!lease.IsAcquired)
        {
            Interlocked.Increment(ref _refused);
        }
        else
        {
            Interlocked.Add(ref _granted, permits);
        }
    }

    /// <summary>
    /// Checks the run: <paramref name="keys"/> keys admitted something, more than <paramref name="leastRefused"/> attempts
    /// were refused (the caps were reached, so the window check saw saturated windows), every stamp was in its call, and no
    /// key passed its guarantee (the spec's windows in <see cref="Stopwatch"/> ticks, the limiters' clock).
    /// </summary>
    public void AssertEveryKeyKeptItsGuarantee(LimiterSpec spec, int keys, long leastRefused)
    {
        var byKey = _recorded.Values.SelectMany(list => list).GroupBy(r => r.Key).ToList();
        Assert.Equal(keys, byKey.Count);
        long refused = Interlocked.Read(ref _refused);
        Assert.True(refused > leastRefused, $"{refused} attempts refused: the caps were never reached");
        Assert.Equal(0, Interlocked.Read(ref _misstamped));
        Assert.Equal(Interlocked.Read(ref _granted), byKey.Sum(key => key.Sum(r => r.Admitted.Permits))); // the check sees every permit
        var inClockTicks = spec with { WindowTicks = TimeMath.ToTicks(TimeSpan.FromTicks(spec.WindowTicks), Stopwatch.Frequency) };
        foreach (var key in byKey)
        {
            Assert.Null(Guarantee.FindViolation(inClockTicks, key.Select(r => r.Admitted).ToList()));
        }
    }

    public void Dispose()
    {
        _recorded.Dispose();
        _callStart.Dispose();
    }
}
