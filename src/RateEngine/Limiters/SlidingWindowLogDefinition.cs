using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Limiters;

/// <summary>The exact sliding-window log from <see cref="SlidingWindowLogRateLimiterOptions"/>.</summary>
internal sealed class SlidingWindowLogDefinition : IAlgorithmDefinition<SlidingWindowLogRateLimiterOptions, SlidingWindowLog, LogState>
{
    public static SlidingWindowLogRateLimiterOptions Validate(SlidingWindowLogRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        OptionsValidation.Positive(options.PermitLimit, nameof(options.PermitLimit));
        if (options.PermitLimit > SlidingWindowLogRateLimiter.MaxPermitLimit)
        {
            throw OptionsValidation.Invalid(
                nameof(options.PermitLimit),
                $"must be at most {SlidingWindowLogRateLimiter.MaxPermitLimit}; use SlidingWindowCounterRateLimiter for larger limits.");
        }

        OptionsValidation.NotNegative(options.QueueLimit, nameof(options.QueueLimit));
        OptionsValidation.Positive(options.Window, nameof(options.Window));
        return new SlidingWindowLogRateLimiterOptions
        {
            PermitLimit = options.PermitLimit,
            Window = options.Window,
            QueueLimit = options.QueueLimit,
            QueueProcessingOrder = options.QueueProcessingOrder,
        };
    }

    /// <remarks>The log always replenishes with the clock: an exact window has no manual mode.</remarks>
    public static LimiterClock CreateClock(SlidingWindowLogRateLimiterOptions options, TimeProvider timeProvider) => new(timeProvider);

    public static SlidingWindowLog CreateAlgorithm(SlidingWindowLogRateLimiterOptions options, LimiterClock clock) =>
        new(options.PermitLimit, Math.Max(1, clock.ToTicks(options.Window)));

    public static QueueSettings QueueSettings(SlidingWindowLogRateLimiterOptions options) =>
        new(options.QueueLimit, options.QueueProcessingOrder, options.Window);
}
