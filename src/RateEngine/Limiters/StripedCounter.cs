using System.Numerics;

namespace RateEngine.Limiters;

/// <summary>
/// An exact counter for statistics that does not become a second point of contention: each processor increments its
/// own cell, and reads add the cells up. Decisions never read it (src/DESIGN.md: statistics are not decisions).
/// </summary>
internal sealed class StripedCounter
{
    // 16 longs = 128 bytes between cells, so no two cells share a cache line, even with adjacent-line prefetching.
    private const int Stride = 16;

    private readonly long[] _cells;
    private readonly int _mask;

    public StripedCounter()
    {
        int stripes = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, 64));
        _mask = stripes - 1;
        _cells = new long[(stripes + 1) * Stride];
    }

    public void Increment() => Interlocked.Increment(ref _cells[((Thread.GetCurrentProcessorId() & _mask) + 1) * Stride]);

    public void Decrement() => Interlocked.Decrement(ref _cells[((Thread.GetCurrentProcessorId() & _mask) + 1) * Stride]);

    public long Sum()
    {
        long sum = 0;
        for (int stripe = 1; stripe <= _mask + 1; stripe++)
        {
            sum += Volatile.Read(ref _cells[stripe * Stride]);
        }

        return sum;
    }
}
