using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

internal sealed class SlidingWindowCounterRule : RedisRule
{
    private readonly long _segment;
    private readonly long _segments;

    public SlidingWindowCounterRule(SlidingWindowCounterRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.PermitLimit, 1, nameof(options.PermitLimit));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.SegmentsPerWindow, 1, nameof(options.SegmentsPerWindow));

        // As in process: every call reads up to a field per segment, and a segment shorter than the script's microsecond
        // would make the window silently longer.
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.SegmentsPerWindow, SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow, nameof(options.SegmentsPerWindow));
        ThrowIfQueued(options.QueueLimit, nameof(SlidingWindowCounterRateLimiterOptions));
        PermitLimit = options.PermitLimit;
        _segments = options.SegmentsPerWindow;
        long window = Microseconds(options.Window, nameof(options.Window));
        if (window < _segments)
        {
            throw new ArgumentOutOfRangeException(nameof(options.SegmentsPerWindow), options.SegmentsPerWindow, "Each segment must last at least a microsecond, the Redis scripts' time unit.");
        }

        // Rounded up, as in-process: a longer segment only makes the window more conservative.
        _segment = (window + _segments - 1) / _segments;
        Suffix = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"swc-{_segment}-{_segments}");
    }

    public override long PermitLimit { get; }

    public override string Suffix { get; }

    public override LuaScript Script => LuaScripts.SlidingWindowCounter;

    public override object Parameters(RedisKey key, long now, long permits, string? nonce) =>
        new Arguments(key, now, PermitLimit, permits, _segment, _segments);

    public override LuaScript ReserveScript => HybridScripts.SlidingWindowCounterReserve;

    public override LuaScript ReturnScript => HybridScripts.SlidingWindowCounterReturn;

    public override object ReserveParameters(RedisKey key, long now, long need, long want) =>
        new ReserveArguments(key, now, PermitLimit, need, want, _segment, _segments);

    private sealed record Arguments(RedisKey Key, long Now, long Limit, long Permits, long Segment, long Segments);

    private sealed record ReserveArguments(RedisKey Key, long Now, long Limit, long Need, long Want, long Segment, long Segments);
}
