namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>A limiter holding the hot keys; <see cref="Worker"/> gives each thread its own order of visits.</summary>
internal abstract class HotKeyTarget : IDisposable
{
    /// <summary>A per-thread loop body over the hot keys (its own random order, from <paramref name="seed"/>).</summary>
    public abstract Func<long, long> Worker(int seed);

    public abstract void Dispose();
}
