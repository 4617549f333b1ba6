namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of the in-box <c>PartitionedRateLimiter</c> over <c>FixedWindowRateLimiter</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct InboxFixedTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Inbox;

    public static PartitionFamily Family => PartitionFamily.FixedWindow;
}
