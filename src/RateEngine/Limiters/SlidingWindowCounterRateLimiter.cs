using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine;

/// <summary>
/// A segmented sliding window that never admits more than <see cref="SlidingWindowCounterRateLimiterOptions.PermitLimit"/>
/// permits in any interval of length <see cref="SlidingWindowCounterRateLimiterOptions.Window"/>, in O(segments) memory.
/// </summary>
/// <remarks>
/// <para>The trade-off: it is conservative. A request is judged against the current segment and the whole
/// <c>SegmentsPerWindow</c> segments before it, so a permit is held until the segment one window after its own segment
/// ends: between one window and one window plus one segment after it was taken. It never over-admits, unlike the in-box
/// <see cref="SlidingWindowRateLimiter"/>, whose permits come back up to one segment early.</para>
/// <para>Pick it for large limits and for per-key state (a few words per key); pick <see cref="SlidingWindowLogRateLimiter"/>
/// when permits must come back to the tick.</para>
/// </remarks>
public sealed class SlidingWindowCounterRateLimiter : RateEngineLimiter
{
    /// <summary>Creates the limiter.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or its time provider is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowCounterRateLimiter(SlidingWindowCounterRateLimiterOptions options)
        : base(Build(Validate(options)))
    {
    }

    private static LimiterParts Build(SlidingWindowCounterRateLimiterOptions options)
    {
        TimeSpan segmentSpan = SegmentSpan(options);
        LimiterClock clock = options.AutoReplenishment
            ? new LimiterClock(options.TimeProvider)
            : new LimiterClock(options.TimeProvider, ManualReplenishment.Step, segmentSpan);
        return new LimiterParts(
            AlgorithmHost.Create<SlidingWindowCounter, CounterState>(CreateAlgorithm(options, clock)),
            clock,
            options.QueueLimit,
            options.QueueProcessingOrder,
            segmentSpan);
    }

    /// <summary>The algorithm for validated options on <paramref name="clock"/> (a manual clock ticks once per segment).</summary>
    internal static SlidingWindowCounter CreateAlgorithm(SlidingWindowCounterRateLimiterOptions options, LimiterClock clock)
    {
        // Round the segment up so that SegmentsPerWindow segments always span at least the window.
        long segmentTicks = clock.IsManual
            ? 1
            : Math.Max(1, (clock.ToTicks(options.Window) + options.SegmentsPerWindow - 1) / options.SegmentsPerWindow);
        return new SlidingWindowCounter(options.PermitLimit, segmentTicks, options.SegmentsPerWindow);
    }

    /// <summary>The in-box sliding window's <c>ReplenishmentPeriod</c>: the window over the segment count, in whole ticks.</summary>
    internal static TimeSpan SegmentSpan(SlidingWindowCounterRateLimiterOptions options) =>
        new(options.Window.Ticks / options.SegmentsPerWindow);

    internal static SlidingWindowCounterRateLimiterOptions Validate(SlidingWindowCounterRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.PermitLimit <= 0)
        {
            throw OptionsValidation.GreaterThanZero(nameof(options.PermitLimit));
        }

        if (options.SegmentsPerWindow <= 0)
        {
            throw OptionsValidation.GreaterThanZero(nameof(options.SegmentsPerWindow));
        }

        if (options.SegmentsPerWindow > SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow)
        {
            throw new ArgumentOutOfRangeException(
                "options",
                options.SegmentsPerWindow,
                $"SegmentsPerWindow must be at most {SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow}: each segment " +
                "keeps 8 bytes per limiter (per key when partitioned), and finer segments than that buy no accuracy worth it.");
        }

        if (options.QueueLimit < 0)
        {
            throw OptionsValidation.GreaterThanOrEqualZero(nameof(options.QueueLimit));
        }

        if (options.Window <= TimeSpan.Zero)
        {
            throw OptionsValidation.GreaterThanZeroSpan(nameof(options.Window));
        }

        if (options.SegmentsPerWindow > options.Window.Ticks)
        {
            throw OptionsValidation.Invalid(
                nameof(options.SegmentsPerWindow), "must be at most Window.Ticks: a segment cannot be shorter than one tick.");
        }

        OptionsValidation.NotNull(options.TimeProvider, nameof(options.TimeProvider));

        return new SlidingWindowCounterRateLimiterOptions
        {
            PermitLimit = options.PermitLimit,
            Window = options.Window,
            SegmentsPerWindow = options.SegmentsPerWindow,
            QueueLimit = options.QueueLimit,
            QueueProcessingOrder = options.QueueProcessingOrder,
            AutoReplenishment = options.AutoReplenishment,
            TimeProvider = options.TimeProvider,
        };
    }
}
