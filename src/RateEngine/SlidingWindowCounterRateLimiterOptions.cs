using System.Threading.RateLimiting;

namespace RateEngine;

/// <summary>Options for <see cref="SlidingWindowCounterRateLimiter"/>. They are copied when the limiter is created.</summary>
public sealed class SlidingWindowCounterRateLimiterOptions
{
    /// <summary>The most segments a window may have: 65,536 (512 KiB of state).</summary>
    public const int MaxSegmentsPerWindow = 1 << 16;

    /// <summary>The most permits admitted in any interval of length <see cref="Window"/>. Required: greater than 0. Default 0 (unset).</summary>
    public int PermitLimit { get; set; }

    /// <summary>The window's length. Required: greater than <see cref="TimeSpan.Zero"/>. Default zero (unset).</summary>
    public TimeSpan Window { get; set; }

    /// <summary>
    /// How many segments the window is cut into: more segments return permits sooner (a permit is held up to one segment
    /// longer than the window) at a cost of 8 bytes each. Required: greater than 0, at most <c>Window.Ticks</c> and at most
    /// <see cref="MaxSegmentsPerWindow"/>.
    /// Default 0 (unset).
    /// </summary>
    public int SegmentsPerWindow { get; set; }

    /// <summary>The most permits that may wait in <c>AcquireAsync</c>. Must be 0 or more. Default 0 (no queue).</summary>
    public int QueueLimit { get; set; }

    /// <summary>Which queued request is served first. Default <see cref="QueueProcessingOrder.OldestFirst"/>.</summary>
    public QueueProcessingOrder QueueProcessingOrder { get; set; } = QueueProcessingOrder.OldestFirst;

    /// <summary>
    /// True (the default) to move segments with the clock. False to move one segment per <c>TryReplenish</c> call, and only
    /// once a segment's length of time has passed since the last move (the in-box sliding window's manual rule).
    /// </summary>
    public bool AutoReplenishment { get; set; } = true;
}
