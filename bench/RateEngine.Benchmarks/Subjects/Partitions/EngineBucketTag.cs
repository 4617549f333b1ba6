using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of RateEngine's <c>PartitionedLimiter.CreateTokenBucket</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct EngineBucketTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.TokenBucket;

    public static string Name => "PartitionedLimiter.CreateTokenBucket";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull => held
        ? PartitionedLimiter.CreateTokenBucket<TKey, TKey>(static key => key, static _ => PartitionSetup.HeldBucket, PartitionSetup.EngineOptions())
        : PartitionedLimiter.CreateTokenBucket<TKey, TKey>(static key => key, static _ => PartitionSetup.HotBucket, PartitionSetup.EngineOptions());
}
