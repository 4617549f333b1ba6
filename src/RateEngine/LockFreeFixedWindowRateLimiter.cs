using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Limiters;

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
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public LockFreeFixedWindowRateLimiter(FixedWindowRateLimiterOptions options)
        : this(options, TimeProvider.System)
    {
    }

    /// <summary>Creates the limiter on <paramref name="timeProvider"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public LockFreeFixedWindowRateLimiter(FixedWindowRateLimiterOptions options, TimeProvider timeProvider)
        : base(LimiterParts.Create<FixedWindowDefinition, FixedWindowRateLimiterOptions, FixedWindow, long>(options, timeProvider))
    {
    }

    /// <summary>
    /// Creates the limiter on <paramref name="timeProvider"/>, handing its permits out from per-core blocks: for one
    /// limiter that many threads hit at once (see <see cref="PerCoreReservationOptions"/> for what it keeps and costs).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/>, <paramref name="perCore"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public LockFreeFixedWindowRateLimiter(FixedWindowRateLimiterOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider)
        : base(LimiterParts.CreatePerCore<FixedWindowDefinition, FixedWindowRateLimiterOptions, FixedWindow, long>(options, perCore, timeProvider))
    {
    }

    /// <inheritdoc />
    protected override RateLimitLease AttemptAcquireCore(int permitCount) => Host switch
    {
        AlgorithmHost<FixedWindow, long> single => AttemptAcquire(new SingleHostCall<FixedWindow, long>(single), permitCount),
        StripedHost<FixedWindow, long> striped => AttemptAcquire(new StripedHostCall<FixedWindow, long>(striped), permitCount),
        _ => base.AttemptAcquireCore(permitCount),
    };
}
