using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Limiters;

/// <summary>The token bucket from the in-box <see cref="TokenBucketRateLimiterOptions"/>.</summary>
internal sealed class TokenBucketDefinition : IAlgorithmDefinition<TokenBucketRateLimiterOptions, TokenBucket, long>
{
    public static TokenBucketRateLimiterOptions Validate(TokenBucketRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        OptionsValidation.Positive(options.TokenLimit, nameof(options.TokenLimit));
        OptionsValidation.Positive(options.TokensPerPeriod, nameof(options.TokensPerPeriod));
        OptionsValidation.NotNegative(options.QueueLimit, nameof(options.QueueLimit));
        OptionsValidation.Positive(options.ReplenishmentPeriod, nameof(options.ReplenishmentPeriod));
        return new TokenBucketRateLimiterOptions
        {
            TokenLimit = options.TokenLimit,
            TokensPerPeriod = options.TokensPerPeriod,
            QueueLimit = options.QueueLimit,
            QueueProcessingOrder = options.QueueProcessingOrder,
            ReplenishmentPeriod = options.ReplenishmentPeriod,
            AutoReplenishment = options.AutoReplenishment,
        };
    }

    public static LimiterClock CreateClock(TokenBucketRateLimiterOptions options, TimeProvider timeProvider) =>
        options.AutoReplenishment
            ? new LimiterClock(timeProvider)
            : new LimiterClock(timeProvider, ManualReplenishment.Elapsed, options.ReplenishmentPeriod);

    /// <remarks>A manual clock ticks like the provider's, so the period is the same number of ticks in both modes.</remarks>
    public static TokenBucket CreateAlgorithm(TokenBucketRateLimiterOptions options, LimiterClock clock) =>
        new(options.TokenLimit, options.TokensPerPeriod, Math.Max(1, clock.ToTicks(options.ReplenishmentPeriod)), clock);

    public static QueueSettings QueueSettings(TokenBucketRateLimiterOptions options) =>
        new(options.QueueLimit, options.QueueProcessingOrder, options.ReplenishmentPeriod, PermitCountName: "tokenCount");
}
