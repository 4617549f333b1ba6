using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Limiters;

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

    /// <summary>Creates the limiter on <see cref="TimeProvider.System"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowLogRateLimiter(SlidingWindowLogRateLimiterOptions options)
        : this(options, TimeProvider.System)
    {
    }

    /// <summary>Creates the limiter on <paramref name="timeProvider"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowLogRateLimiter(SlidingWindowLogRateLimiterOptions options, TimeProvider timeProvider)
        : base(LimiterParts.Create<SlidingWindowLogDefinition, SlidingWindowLogRateLimiterOptions, SlidingWindowLog, LogState>(options, timeProvider))
    {
    }

    /// <summary>
    /// Creates the limiter on <paramref name="timeProvider"/>, handing its permits out from per-core blocks: for one log
    /// that many threads hit at once. The cap holds as without blocks, for the times permits are used; the log then counts
    /// each permit for 1/128 of a window longer, so its steady rate is about 0.8 % lower (see
    /// <see cref="PerCoreReservationOptions"/> for what else it keeps and costs). With
    /// <see cref="PerCoreReservationOptions.MaxBlockSize"/> 1 it is the log without blocks.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/>, <paramref name="perCore"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowLogRateLimiter(SlidingWindowLogRateLimiterOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider)
        : base(LimiterParts.CreatePerCoreLog(options, perCore, timeProvider))
    {
    }

    /// <inheritdoc />
    protected override RateLimitLease AttemptAcquireCore(int permitCount) => Host switch
    {
        AlgorithmHost<SlidingWindowLog, LogState> single => AttemptAcquire(new SingleHostCall<SlidingWindowLog, LogState>(single), permitCount),
        StripedHost<BlockPeriodLog, LogState> striped => AttemptAcquire(new StripedHostCall<BlockPeriodLog, LogState>(striped), permitCount),
        _ => base.AttemptAcquireCore(permitCount),
    };
}
