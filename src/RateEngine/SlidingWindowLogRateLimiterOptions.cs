using System.Threading.RateLimiting;

namespace RateEngine;

/// <summary>Options for <see cref="SlidingWindowLogRateLimiter"/>. They are copied when the limiter is created.</summary>
public sealed class SlidingWindowLogRateLimiterOptions
{
    /// <summary>
    /// The most permits admitted in any interval of length <see cref="Window"/>. Required: must be greater than 0 and at
    /// most <see cref="SlidingWindowLogRateLimiter.MaxPermitLimit"/>, since the log keeps one entry per permit.
    /// Default 0 (unset).
    /// </summary>
    public int PermitLimit { get; set; }

    /// <summary>The sliding window's length. Required: must be greater than <see cref="TimeSpan.Zero"/>. Default zero (unset).</summary>
    public TimeSpan Window { get; set; }

    /// <summary>The most permits that may wait in <c>AcquireAsync</c>. Must be 0 or more. Default 0 (no queue).</summary>
    public int QueueLimit { get; set; }

    /// <summary>Which queued request is served first. Default <see cref="QueueProcessingOrder.OldestFirst"/>.</summary>
    public QueueProcessingOrder QueueProcessingOrder { get; set; } = QueueProcessingOrder.OldestFirst;
}
