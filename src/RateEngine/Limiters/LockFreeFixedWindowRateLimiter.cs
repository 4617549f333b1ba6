using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine;

/// <summary>
/// A lock-free drop-in for the in-box <see cref="FixedWindowRateLimiter"/>: it takes the same
/// <see cref="FixedWindowRateLimiterOptions"/>, validates them the same way and makes the same decisions, at most
/// <c>PermitLimit</c> permits per window.
/// </summary>
/// <remarks>
/// Windows are aligned to the limiter's creation, as the in-box timer's are, but computed from the clock at each
/// acquire instead of reset by a timer, so a late timer can never stretch or shift a window. With
/// <c>AutoReplenishment = false</c>, <c>TryReplenish</c> starts the next window once a window's length of time has
/// passed since the last start, exactly like the in-box limiter.
/// </remarks>
public sealed class LockFreeFixedWindowRateLimiter : RateEngineLimiter
{
    /// <summary>Creates the limiter on <see cref="TimeProvider.System"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range (the in-box rules).</exception>
    public LockFreeFixedWindowRateLimiter(FixedWindowRateLimiterOptions options)
        : this(options, TimeProvider.System)
    {
    }

    /// <summary>Creates the limiter on <paramref name="timeProvider"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range (the in-box rules).</exception>
    public LockFreeFixedWindowRateLimiter(FixedWindowRateLimiterOptions options, TimeProvider timeProvider)
        : base(Build(Validate(options), OptionsValidation.NotNull(timeProvider, nameof(timeProvider))))
    {
    }

    private static LimiterParts Build(FixedWindowRateLimiterOptions options, TimeProvider timeProvider)
    {
        LimiterClock clock = options.AutoReplenishment
            ? new LimiterClock(timeProvider)
            : new LimiterClock(timeProvider, ManualReplenishment.Step, options.Window);
        return new LimiterParts(
            AlgorithmHost.Create<FixedWindow, long>(CreateAlgorithm(options, clock)), clock, options.QueueLimit, options.QueueProcessingOrder, options.Window);
    }

    /// <summary>The algorithm for validated options on <paramref name="clock"/> (a manual clock ticks once per window).</summary>
    internal static FixedWindow CreateAlgorithm(FixedWindowRateLimiterOptions options, LimiterClock clock) =>
        new(options.PermitLimit, clock.IsManual ? 1 : Math.Max(1, clock.ToTicks(options.Window)));

    internal static FixedWindowRateLimiterOptions Validate(FixedWindowRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.PermitLimit <= 0)
        {
            throw OptionsValidation.GreaterThanZero(nameof(options.PermitLimit));
        }

        if (options.QueueLimit < 0)
        {
            throw OptionsValidation.GreaterThanOrEqualZero(nameof(options.QueueLimit));
        }

        if (options.Window <= TimeSpan.Zero)
        {
            throw OptionsValidation.GreaterThanZeroSpan(nameof(options.Window));
        }

        return new FixedWindowRateLimiterOptions
        {
            PermitLimit = options.PermitLimit,
            QueueLimit = options.QueueLimit,
            QueueProcessingOrder = options.QueueProcessingOrder,
            Window = options.Window,
            AutoReplenishment = options.AutoReplenishment,
        };
    }
}
