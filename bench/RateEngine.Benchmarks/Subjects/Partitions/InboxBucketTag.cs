namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of the in-box <c>PartitionedRateLimiter</c> over <c>TokenBucketRateLimiter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct InboxBucketTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.TokenBucket;
}
