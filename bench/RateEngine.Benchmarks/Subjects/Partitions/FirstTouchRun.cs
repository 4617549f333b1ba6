namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>A fresh held-options limiter and the keys to touch on it.</summary>
internal abstract class FirstTouchRun : IDisposable
{
    /// <summary>One attempt per key [start, end) on this run's limiter; returns the admissions.</summary>
    public abstract long Touch(int start, int end);

    /// <summary>Keys RateEngine's limiter holds, or null for the in-box one.</summary>
    public abstract long? PartitionCount { get; }

    public abstract void Dispose();
}
