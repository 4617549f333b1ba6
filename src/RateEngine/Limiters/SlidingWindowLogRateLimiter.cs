using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine;

/// <summary>
/// The exact sliding window: at most <see cref="SlidingWindowLogRateLimiterOptions.PermitLimit"/> permits in every
/// interval of length <see cref="SlidingWindowLogRateLimiterOptions.Window"/>, and a request is admitted exactly when
/// the last window leaves room for it. Lock-free; memory is one 24-byte entry per permit of the limit.
/// </summary>
/// <remarks>
/// Pick it when the cap must hold to the tick and the limit is modest (up to tens of thousands of permits). Each
/// permit comes back exactly one window after it was taken, so <see cref="ReplenishingRateLimiter.ReplenishmentPeriod"/>
/// reports the window and replenishment is always automatic.
/// </remarks>
public sealed class SlidingWindowLogRateLimiter : RateEngineLimiter
{
    /// <summary>The largest supported permit limit (16,777,216): the log allocates one entry per permit.</summary>
    public const int MaxPermitLimit = 1 << 24;

    /// <summary>Creates the limiter.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or its time provider is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowLogRateLimiter(SlidingWindowLogRateLimiterOptions options)
        : base(Build(Validate(options)))
    {
    }

    private static LimiterParts Build(SlidingWindowLogRateLimiterOptions options)
    {
        var clock = new LimiterClock(options.TimeProvider);
        return new LimiterParts(
            AlgorithmHost.Create<SlidingWindowLog, LogState>(CreateAlgorithm(options, clock)),
            clock,
            options.QueueLimit,
            options.QueueProcessingOrder,
            options.Window);
    }

    /// <summary>The algorithm for validated options on <paramref name="clock"/>.</summary>
    internal static SlidingWindowLog CreateAlgorithm(SlidingWindowLogRateLimiterOptions options, LimiterClock clock) =>
        new(options.PermitLimit, Math.Max(1, clock.ToTicks(options.Window)));

    internal static SlidingWindowLogRateLimiterOptions Validate(SlidingWindowLogRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.PermitLimit <= 0)
        {
            throw OptionsValidation.GreaterThanZero(nameof(options.PermitLimit));
        }

        if (options.PermitLimit > MaxPermitLimit)
        {
            throw OptionsValidation.Invalid(
                nameof(options.PermitLimit), $"must be at most {MaxPermitLimit}; use SlidingWindowCounterRateLimiter for larger limits.");
        }

        if (options.QueueLimit < 0)
        {
            throw OptionsValidation.GreaterThanOrEqualZero(nameof(options.QueueLimit));
        }

        if (options.Window <= TimeSpan.Zero)
        {
            throw OptionsValidation.GreaterThanZeroSpan(nameof(options.Window));
        }

        OptionsValidation.NotNull(options.TimeProvider, nameof(options.TimeProvider));

        // A copy: later changes to the caller's object must not reach the limiter.
        return new SlidingWindowLogRateLimiterOptions
        {
            PermitLimit = options.PermitLimit,
            Window = options.Window,
            QueueLimit = options.QueueLimit,
            QueueProcessingOrder = options.QueueProcessingOrder,
            TimeProvider = options.TimeProvider,
        };
    }
}
