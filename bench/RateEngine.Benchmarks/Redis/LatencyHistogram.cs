using System.Diagnostics;
using System.Numerics;

namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// Latencies in nanoseconds, log-linear buckets (exact below 128 ns, then 64 per power of two: within 1.6 %), so a caller
/// records millions of acquires without allocating and the quantiles come from the whole run, not a sample.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int Exact = 128;
    private const int SubBits = 6;
    private static readonly double NanosecondsPerTick = 1e9 / Stopwatch.Frequency;
    private readonly long[] _counts = new long[Exact + (64 * (1 << SubBits))];

    public long Count { get; private set; }

    public void RecordTicks(long ticks)
    {
        long ns = (long)(ticks * NanosecondsPerTick);
        _counts[Index(Math.Max(0, ns))]++;
        Count++;
    }

    public void Add(LatencyHistogram other)
    {
        for (int i = 0; i < _counts.Length; i++)
        {
            _counts[i] += other._counts[i];
        }

        Count += other.Count;
    }

    /// <summary>The latency at <paramref name="quantile"/> in µs (the bucket's lower bound); NaN when nothing was recorded.</summary>
    public double QuantileMicroseconds(double quantile)
    {
        if (Count == 0)
        {
            return double.NaN;
        }

        long rank = (long)Math.Ceiling(quantile * Count);
        long seen = 0;
        for (int i = 0; i < _counts.Length; i++)
        {
            seen += _counts[i];
            if (seen >= Math.Max(1, rank))
            {
                return LowerBound(i) / 1e3;
            }
        }

        return LowerBound(_counts.Length - 1) / 1e3;
    }

    private static int Index(long ns)
    {
        if (ns < Exact)
        {
            return (int)ns;
        }

        int exponent = 63 - BitOperations.LeadingZeroCount((ulong)ns); // >= 7
        int sub = (int)(ns >> (exponent - SubBits)) & ((1 << SubBits) - 1);
        return Math.Min(Exact + ((exponent - 7) * (1 << SubBits)) + sub, Exact + (64 * (1 << SubBits)) - 1);
    }

    private static long LowerBound(int index)
    {
        if (index < Exact)
        {
            return index;
        }

        int exponent = ((index - Exact) >> SubBits) + 7;
        long sub = (index - Exact) & ((1 << SubBits) - 1);
        return ((1L << SubBits) + sub) << (exponent - SubBits);
    }
}
