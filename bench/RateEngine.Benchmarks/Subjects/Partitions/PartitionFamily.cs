namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The limiter families compared as partitioned limiters (RateEngine's factory against the in-box one).</summary>
internal enum PartitionFamily
{
    /// <summary><c>PartitionedLimiter.CreateFixedWindow</c> against <c>RateLimitPartition.GetFixedWindowLimiter</c>.</summary>
    FixedWindow,

    /// <summary><c>PartitionedLimiter.CreateTokenBucket</c> against <c>RateLimitPartition.GetTokenBucketLimiter</c>.</summary>
    TokenBucket,

    /// <summary><c>PartitionedLimiter.CreateSlidingWindowCounter</c> against <c>RateLimitPartition.GetSlidingWindowLimiter</c>.</summary>
    SlidingWindow,
}
