namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of the in-box <c>PartitionedRateLimiter</c> over <c>SlidingWindowRateLimiter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct InboxSlidingTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.SlidingWindow;
}
