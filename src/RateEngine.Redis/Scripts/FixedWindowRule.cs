using System.Threading.RateLimiting;
using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

internal sealed class FixedWindowRule : RedisRule
{
    private readonly long _window;

    public FixedWindowRule(FixedWindowRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.PermitLimit, 1, nameof(options.PermitLimit));
        ThrowIfQueued(options.QueueLimit, nameof(FixedWindowRateLimiterOptions));
        PermitLimit = options.PermitLimit;
        _window = Microseconds(options.Window, nameof(options.Window));
        Suffix = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"fw-{_window}");
    }

    public override long PermitLimit { get; }

    public override string Suffix { get; }

    public override LuaScript Script => LuaScripts.FixedWindow;

    public override object Parameters(RedisKey key, long now, long permits, string? nonce) =>
        new Arguments(key, now, PermitLimit, permits, _window);

    public override LuaScript ReserveScript => HybridScripts.FixedWindowReserve;

    public override LuaScript ReturnScript => HybridScripts.FixedWindowReturn;

    public override object ReserveParameters(RedisKey key, long now, long need, long want) =>
        new ReserveArguments(key, now, PermitLimit, need, want, _window);

    private sealed record Arguments(RedisKey Key, long Now, long Limit, long Permits, long Window);

    private sealed record ReserveArguments(RedisKey Key, long Now, long Limit, long Need, long Want, long Window);
}
