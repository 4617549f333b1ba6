using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Limiters;

/// <summary>The segmented sliding window from <see cref="SlidingWindowCounterRateLimiterOptions"/>.</summary>
internal sealed class SlidingWindowCounterDefinition
    : IAlgorithmDefinition<SlidingWindowCounterRateLimiterOptions, SlidingWindowCounter, CounterState>
{
    public static SlidingWindowCounterRateLimiterOptions Validate(SlidingWindowCounterRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        OptionsValidation.Positive(options.PermitLimit, nameof(options.PermitLimit));
        OptionsValidation.Positive(options.SegmentsPerWindow, nameof(options.SegmentsPerWindow));
        if (options.SegmentsPerWindow > SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow)
        {
            throw new ArgumentOutOfRangeException(
                "options",
                options.SegmentsPerWindow,
                $"SegmentsPerWindow must be at most {SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow}: each segment " +
                "keeps 8 bytes per limiter (per key when partitioned), and finer segments than that buy no accuracy worth it.");
        }

        OptionsValidation.NotNegative(options.QueueLimit, nameof(options.QueueLimit));
        OptionsValidation.Positive(options.Window, nameof(options.Window));
        if (options.SegmentsPerWindow > options.Window.Ticks)
        {
            throw OptionsValidation.Invalid(
                nameof(options.SegmentsPerWindow), "must be at most Window.Ticks: a segment cannot be shorter than one tick.");
        }

        return new SlidingWindowCounterRateLimiterOptions
        {
            PermitLimit = options.PermitLimit,
            Window = options.Window,
            SegmentsPerWindow = options.SegmentsPerWindow,
            QueueLimit = options.QueueLimit,
            QueueProcessingOrder = options.QueueProcessingOrder,
            AutoReplenishment = options.AutoReplenishment,
        };
    }

    public static LimiterClock CreateClock(SlidingWindowCounterRateLimiterOptions options, TimeProvider timeProvider) =>
        options.AutoReplenishment
            ? new LimiterClock(timeProvider)
            : new LimiterClock(timeProvider, ManualReplenishment.Step, SegmentSpan(options));

    /// <remarks>
    /// The segment is rounded up, so that <c>SegmentsPerWindow</c> segments always span at least the window. A manual
    /// clock ticks once per segment.
    /// </remarks>
    public static SlidingWindowCounter CreateAlgorithm(SlidingWindowCounterRateLimiterOptions options, LimiterClock clock)
    {
        long segmentTicks = clock.IsManual
            ? 1
            : Math.Max(1, (clock.ToTicks(options.Window) + options.SegmentsPerWindow - 1) / options.SegmentsPerWindow);
        return new SlidingWindowCounter(options.PermitLimit, segmentTicks, options.SegmentsPerWindow, clock);
    }

    public static QueueSettings QueueSettings(SlidingWindowCounterRateLimiterOptions options) =>
        new(options.QueueLimit, options.QueueProcessingOrder, SegmentSpan(options));

    /// <summary>The in-box sliding window's <c>ReplenishmentPeriod</c>: the window over the segment count, in whole ticks.</summary>
    private static TimeSpan SegmentSpan(SlidingWindowCounterRateLimiterOptions options) =>
        new(options.Window.Ticks / options.SegmentsPerWindow);
}
