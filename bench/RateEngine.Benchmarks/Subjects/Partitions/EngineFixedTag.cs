namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of RateEngine's <c>PartitionedLimiter.CreateFixedWindow</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct EngineFixedTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.FixedWindow;
}
