using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of the in-box <c>PartitionedRateLimiter</c> over <c>SlidingWindowRateLimiter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct InboxSlidingTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.SlidingWindow;

    public static string Name => "in-box PartitionedRateLimiter + SlidingWindowRateLimiter";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull => held
        ? PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetSlidingWindowLimiter(key, static _ => PartitionSetup.HeldInboxSliding))
        : PartitionedRateLimiter.Create<TKey, TKey>(static key => RateLimitPartition.GetSlidingWindowLimiter(key, static _ => PartitionSetup.HotInboxSliding));
}
