namespace RateEngine.Budgets;

/// <summary>
/// One selector's last N actuals in a ring, and the quantile of them that estimates read. Writers take the window's
/// lock; readers read <see cref="Cached"/> only, with no lock.
/// </summary>
/// <remarks>
/// Invariant: <see cref="Cached"/> is <see cref="NotReady"/> until the window holds the minimum number of samples;
/// from then on it is at least 1 and is the (headroom-scaled) nearest-rank quantile of the ring as it was at the last
/// recompute, which happened at most k − 1 observations ago, k = max(1, n / 64) for the n samples held. It is published with one volatile write of a long (atomic
/// on 64-bit runtimes, which are the ones .NET 10 supports), so a reader sees an old or a new value, never a torn one.
/// </remarks>
internal sealed class SampleWindow(int capacity)
{
    /// <summary>The cached value of a window that has not seen enough samples yet.</summary>
    public const long NotReady = 0;

    private readonly Lock _lock = new();
    private readonly long[] _ring = new long[capacity];
    private readonly long[] _scratch = new long[capacity];
    private int _next;
    private int _count;
    private int _sinceRecompute;
    private long _cached = NotReady;

    public long Cached => Volatile.Read(ref _cached);

    public void Add(long actual, double quantile, double headroom, int minimumSamples)
    {
        lock (_lock)
        {
            _ring[_next] = actual;
            _next = _next + 1 == _ring.Length ? 0 : _next + 1;
            if (_count < _ring.Length)
            {
                _count++;
            }

            _sinceRecompute++;
            if (_count < minimumSamples)
            {
                return;
            }

            // The first estimate as soon as there are enough samples, then one every n / 64 samples for the n held (a full
            // ring keeps its count at minimumSamples when the two are equal: that must not mean a sort on every sample). By
            // the samples held, not the ring's size: while a large ring fills, the first estimate would otherwise stand
            // for up to N / 64 - 1 samples, from only the minimum.
            if (_cached == NotReady || _sinceRecompute >= Math.Max(1, _count / 64))
            {
                _sinceRecompute = 0;
                Volatile.Write(ref _cached, Recompute(quantile, headroom));
            }
        }
    }

    /// <summary>The nearest-rank quantile of the samples held, times the headroom, rounded up, at least 1.</summary>
    private long Recompute(double quantile, double headroom)
    {
        Span<long> sorted = _scratch.AsSpan(0, _count);
        _ring.AsSpan(0, _count).CopyTo(sorted);
        sorted.Sort();

        // Nearest rank: the ⌈q·n⌉-th smallest sample (1-based). The epsilon keeps a product such as 0.95 · 20 that
        // lands a hair above a whole number in binary from taking the next rank; the clamp covers q = 1.
        int rank = (int)Math.Ceiling((quantile * _count) - 1e-9);
        long value = sorted[Math.Clamp(rank, 1, _count) - 1];
        if (headroom > 1)
        {
            double scaled = Math.Ceiling(value * headroom);
            value = scaled >= long.MaxValue ? long.MaxValue : (long)scaled;
        }

        return Math.Max(1, value);
    }
}
