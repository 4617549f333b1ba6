namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of RateEngine's <c>PartitionedLimiter.CreateSlidingWindowCounter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct EngineCounterTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.SlidingWindow;
}
