namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>Which side of a comparison: the in-box <c>PartitionedRateLimiter.Create</c> or RateEngine's factory.</summary>
internal enum PartitionSide
{
    Inbox,
    Engine,
}
