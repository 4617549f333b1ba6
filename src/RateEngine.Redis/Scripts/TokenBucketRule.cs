using System.Threading.RateLimiting;
using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

internal sealed class TokenBucketRule : RedisRule
{
    private readonly long _period;
    private readonly long _rate;

    public TokenBucketRule(TokenBucketRateLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.TokenLimit, 1, nameof(options.TokenLimit));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.TokensPerPeriod, 1, nameof(options.TokensPerPeriod));
        ThrowIfQueued(options.QueueLimit, nameof(TokenBucketRateLimiterOptions));
        PermitLimit = options.TokenLimit;
        _period = Microseconds(options.ReplenishmentPeriod, nameof(options.ReplenishmentPeriod));
        _rate = options.TokensPerPeriod;
        Suffix = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"tb-{_rate}-{_period}");

        // Tokens are kept in units of 1/period, so a full bucket is limit × period of them: exact below 2^53.
        if ((Int128)PermitLimit * _period >= MaxExact)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"TokenLimit × ReplenishmentPeriod in microseconds must be below 2^53 ({PermitLimit} × {_period}).");
        }
    }

    public override long PermitLimit { get; }

    public override string Suffix { get; }

    public override LuaScript Script => LuaScripts.TokenBucket;

    public override object Parameters(RedisKey key, long now, long permits, string? nonce) =>
        new Arguments(key, now, PermitLimit, permits, _period, _rate);

    private sealed record Arguments(RedisKey Key, long Now, long Limit, long Permits, long Period, long Rate);
}
