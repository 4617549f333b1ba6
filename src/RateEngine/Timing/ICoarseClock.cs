namespace RateEngine.Timing;

/// <summary>
/// A <see cref="TimeProvider"/> whose timestamps are a <see cref="CoarseTicker"/>'s cached field (<c>CoarseTimeProvider</c>):
/// <see cref="LimiterClock"/> reads the field directly, without the virtual call or the high-water mark.
/// </summary>
internal interface ICoarseClock
{
    CoarseTicker Ticker { get; }
}
