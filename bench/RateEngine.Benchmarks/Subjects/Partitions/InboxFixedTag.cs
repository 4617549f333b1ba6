using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of the in-box <c>PartitionedRateLimiter</c> over <c>FixedWindowRateLimiter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct InboxFixedTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.FixedWindow;

    public static string Name => "in-box PartitionedRateLimiter + FixedWindowRateLimiter";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull => held
        ? PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetFixedWindowLimiter(key, static _ => PartitionSetup.HeldFixed))
        : PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetFixedWindowLimiter(key, static _ => PartitionSetup.HotFixed));
}
