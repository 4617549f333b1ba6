using RateEngine.Redis.Scripts;

namespace RateEngine.Redis.Hybrid;

/// <summary>
/// A hybrid limiter's key: its rule is resolved when the state is created, as the in-process partitioned limiters resolve
/// a key's options on first touch.
/// </summary>
internal sealed class LimiterKey(string partitionKey, RedisRule rule, string keyPrefix) : LocalKey(partitionKey)
{
    public RedisRule Rule { get; } = rule;

    public override string RedisKey => RedisRule.KeyOf(keyPrefix, PartitionKey, Rule);

    /// <summary>The rule's limit, kept here: the hot path checks it without reaching into the rule (one cache miss less).</summary>
    public long PermitLimit { get; } = rule.PermitLimit;
}
