namespace RateEngine.Algorithms;

/// <summary>
/// Per-limiter (or per-key) state of <see cref="SlidingWindowCounter"/>: a struct, so a key's entry holds it inline (one
/// object per key). Every use goes through a <c>ref</c> to where it lives; a copy would be a snapshot that CASes nothing.
/// </summary>
internal struct CounterState
{
    /// <summary>(current segment, permits counted in it).</summary>
    public long Current;

    /// <summary>(segment e, sum of the S segments before e): a cache of <see cref="History"/>.</summary>
    public long HistorySum;

    /// <summary>
    /// Finished segments: slot j % (S+1) holds (j, count of j) once j is over. Null until a rollover leaves a segment that
    /// counted anything: a key seen once (most keys of a flood of new ones) never needs
    /// it, and an empty history reads as zeros. Set once, by CAS, before the word moves past that segment.
    /// </summary>
    public long[]? History;
}
