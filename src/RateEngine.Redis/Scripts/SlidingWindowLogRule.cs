using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

internal sealed class SlidingWindowLogRule : RedisRule
{
    private readonly long _window;

    public SlidingWindowLogRule(SlidingWindowLogRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.PermitLimit, 1, nameof(options.PermitLimit));
        if (options.PermitLimit > RedisLimiter.MaxSlidingWindowLogPermitLimit)
        {
            throw new ArgumentOutOfRangeException(
                nameof(options.PermitLimit),
                options.PermitLimit,
                $"A sliding-window log on Redis keeps one member per permit and adds a request's permits in one script: its limit is at most {RedisLimiter.MaxSlidingWindowLogPermitLimit} (use the sliding-window counter or the fixed window for more).");
        }
        ThrowIfQueued(options.QueueLimit, nameof(SlidingWindowLogRateLimiterOptions));
        PermitLimit = options.PermitLimit;
        _window = Microseconds(options.Window, nameof(options.Window));
        Suffix = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"swl-{_window}");
    }

    public override long PermitLimit { get; }

    public override string Suffix { get; }

    public override LuaScript Script => LuaScripts.SlidingWindowLog;

    public override bool NeedsNonce => true;

    public override object Parameters(RedisKey key, long now, long permits, string? nonce) =>
        new Arguments(key, now, PermitLimit, permits, _window, nonce!);

    private sealed record Arguments(RedisKey Key, long Now, long Limit, long Permits, long Window, string Nonce);
}
