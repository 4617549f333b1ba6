using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of RateEngine's <c>PartitionedLimiter.CreateSlidingWindowCounter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct EngineCounterTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.SlidingWindow;

    public static string Name => "PartitionedLimiter.CreateSlidingWindowCounter";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull => held
        ? PartitionedLimiter.CreateSlidingWindowCounter<TKey, TKey>(static key => key, static _ => PartitionSetup.HeldCounter, PartitionSetup.EngineOptions())
        : PartitionedLimiter.CreateSlidingWindowCounter<TKey, TKey>(static key => key, static _ => PartitionSetup.HotCounter, PartitionSetup.EngineOptions());
}
