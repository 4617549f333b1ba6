using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Limiters;

/// <summary>The fixed window from the in-box <see cref="FixedWindowRateLimiterOptions"/>.</summary>
internal sealed class FixedWindowDefinition : IAlgorithmDefinition<FixedWindowRateLimiterOptions, FixedWindow, long>
{
    public static FixedWindowRateLimiterOptions Validate(FixedWindowRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        OptionsValidation.Positive(options.PermitLimit, nameof(options.PermitLimit));
        OptionsValidation.NotNegative(options.QueueLimit, nameof(options.QueueLimit));
        OptionsValidation.Positive(options.Window, nameof(options.Window));
        return new FixedWindowRateLimiterOptions
        {
            PermitLimit = options.PermitLimit,
            QueueLimit = options.QueueLimit,
            QueueProcessingOrder = options.QueueProcessingOrder,
            Window = options.Window,
            AutoReplenishment = options.AutoReplenishment,
        };
    }

    public static LimiterClock CreateClock(FixedWindowRateLimiterOptions options, TimeProvider timeProvider) =>
        options.AutoReplenishment
            ? new LimiterClock(timeProvider)
            : new LimiterClock(timeProvider, ManualReplenishment.Step, options.Window);

    /// <remarks>A manual clock ticks once per window.</remarks>
    public static FixedWindow CreateAlgorithm(FixedWindowRateLimiterOptions options, LimiterClock clock) =>
        new(options.PermitLimit, clock.IsManual ? 1 : Math.Max(1, clock.ToTicks(options.Window)), clock);

    public static QueueSettings QueueSettings(FixedWindowRateLimiterOptions options) =>
        new(options.QueueLimit, options.QueueProcessingOrder, options.Window);
}
