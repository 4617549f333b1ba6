using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// The attack path of a partitioned limiter: a flood of new keys against a table full of active ones, each refused
/// (<c>MaxPartitions</c>), against the ordinary rejection of an existing key that has used its limit (the Baseline).
/// </summary>
/// <remarks>
/// The table holds about 65,536 int keys that each took their one permit of the hour, so none is idle and every new key is
/// refused; key 0 is the exhausted existing key. New keys count up from 2^20, far from the held ones.
/// </remarks>
[MemoryDiagnoser]
public class PartitionRefusal
{
    private const int Held = 1 << 16;

    private PartitionedRateLimiter<int> _limiter = null!;
    private int _nextNewKey;

    [GlobalSetup]
    public void Setup()
    {
        var onePerHour = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromHours(1) };
        _limiter = PartitionedLimiter.CreateFixedWindow<int, int>(key => key, _ => onePerHour, new PartitionedLimiterOptions { MaxPartitions = Held });
        // Shards draw capacity in chunks, so the table fills up a little short of MaxPartitions: offer twice as many keys.
        int held = 0;
        for (int key = 0; key < 2 * Held; key++)
        {
            using RateLimitLease lease = _limiter.AttemptAcquire(key);
            held += lease.IsAcquired ? 1 : 0;
        }

        if (held < Held * 9 / 10 || _limiter.AttemptAcquire(0).IsAcquired)
        {
            throw new InvalidOperationException($"the table holds {held} keys, or key 0 was not exhausted");
        }

        _nextNewKey = 1 << 20;
    }

    [GlobalCleanup]
    public void Cleanup() => _limiter.Dispose();

    [Benchmark(Baseline = true)]
    public bool RejectExistingKey()
    {
        using RateLimitLease lease = _limiter.AttemptAcquire(0);
        return lease.IsAcquired;
    }

    [Benchmark]
    public bool RefuseNewKeyTableFull()
    {
        using RateLimitLease lease = _limiter.AttemptAcquire(_nextNewKey++);
        return lease.IsAcquired;
    }
}
