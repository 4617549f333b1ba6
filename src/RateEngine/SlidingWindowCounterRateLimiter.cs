using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Limiters;

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
    /// <summary>Creates the limiter on <see cref="TimeProvider.System"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowCounterRateLimiter(SlidingWindowCounterRateLimiterOptions options)
        : this(options, TimeProvider.System)
    {
    }

    /// <summary>Creates the limiter on <paramref name="timeProvider"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowCounterRateLimiter(SlidingWindowCounterRateLimiterOptions options, TimeProvider timeProvider)
        : base(LimiterParts.Create<SlidingWindowCounterDefinition, SlidingWindowCounterRateLimiterOptions, SlidingWindowCounter, CounterState>(options, timeProvider))
    {
    }

    /// <summary>
    /// Creates the limiter on <paramref name="timeProvider"/>, handing its permits out from per-core blocks: for one
    /// limiter that many threads hit at once (see <see cref="PerCoreReservationOptions"/> for what it keeps and costs).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/>, <paramref name="perCore"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public SlidingWindowCounterRateLimiter(SlidingWindowCounterRateLimiterOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider)
        : base(LimiterParts.CreatePerCore<SlidingWindowCounterDefinition, SlidingWindowCounterRateLimiterOptions, SlidingWindowCounter, CounterState>(options, perCore, timeProvider))
    {
    }

    /// <inheritdoc />
    protected override RateLimitLease AttemptAcquireCore(int permitCount) => Host switch
    {
        AlgorithmHost<SlidingWindowCounter, CounterState> single => AttemptAcquire(new SingleHostCall<SlidingWindowCounter, CounterState>(single), permitCount),
        StripedHost<SlidingWindowCounter, CounterState> striped => AttemptAcquire(new StripedHostCall<SlidingWindowCounter, CounterState>(striped), permitCount),
        _ => base.AttemptAcquireCore(permitCount),
    };
}
