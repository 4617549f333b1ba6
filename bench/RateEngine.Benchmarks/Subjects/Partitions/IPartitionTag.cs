using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>
/// Tags that give each (side, family) pair its own compiled copy of the partition loops, so that every limiter type has
/// its own call site and PGO profile, as in an application that uses one limiter (see <see cref="IAcquirer"/>). Each tag
/// also builds its limiter, so a pair's name, factory and options are found in one file.
/// </summary>
internal interface IPartitionTag
{
    static abstract PartitionSide Side { get; }

    static abstract PartitionFamily Family { get; }

    /// <summary>What the limiter is, for progress lines and failure messages.</summary>
    static abstract string Name { get; }

    /// <summary>
    /// A new partitioned limiter whose resource is the key itself: with the first-touch options of
    /// <see cref="PartitionSetup"/> when <paramref name="held"/>, else with the hot-key options.
    /// </summary>
    static abstract PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull;
}
