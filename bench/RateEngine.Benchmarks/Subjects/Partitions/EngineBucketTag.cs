namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of RateEngine's <c>PartitionedLimiter.CreateTokenBucket</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct EngineBucketTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.TokenBucket;
}
