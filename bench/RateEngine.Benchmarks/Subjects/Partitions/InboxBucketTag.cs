using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of the in-box <c>PartitionedRateLimiter</c> over <c>TokenBucketRateLimiter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct InboxBucketTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.TokenBucket;

    public static string Name => "in-box PartitionedRateLimiter + TokenBucketRateLimiter";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull => held
        ? PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetTokenBucketLimiter(key, static _ => PartitionSetup.HeldBucket))
        : PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetTokenBucketLimiter(key, static _ => PartitionSetup.HotBucket));
}
