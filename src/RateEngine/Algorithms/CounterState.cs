namespace RateEngine.Algorithms;

/// <summary>Per-limiter (or per-key) state of <see cref="SlidingWindowCounter"/>.</summary>
internal sealed class CounterState
{
    /// <summary>(current segment, permits counted in it).</summary>
    public long Current;

    /// <summary>(segment e, sum of the S segments before e): a cache of <see cref="History"/>.</summary>
    public long HistorySum;

    /// <summary>Finished segments: slot j % (S+1) holds (j, count of j) once j is over.</summary>
    public readonly long[] History;

    public CounterState(int slots) => History = new long[slots];
}
