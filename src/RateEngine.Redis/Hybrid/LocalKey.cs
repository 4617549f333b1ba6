using RateEngine.Redis.Scripts;

namespace RateEngine.Redis.Hybrid;

/// <summary>
/// One key's local state on one node: its rule (resolved when the state is created, as the in-process partitioned limiters
/// resolve a key's options on first touch), its current block and the reservation in flight.
/// </summary>
internal sealed class LocalKey(string partitionKey, RedisRule rule, string redisKey)
{
    public string PartitionKey { get; } = partitionKey;

    public RedisRule Rule { get; } = rule;

    /// <summary>The key on Redis, made once rather than per reservation.</summary>
    public string RedisKey { get; } = redisKey;

    public LocalBlock Block = LocalBlock.Empty;

    /// <summary>The reservation in flight, at most one per key (guarded by the key's lock when started or cleared).</summary>
    public Task<LocalBlock>? Refill;

    /// <summary>When the key was last used, to a resolution of <see cref="LocalReservations"/>' touch interval.</summary>
    public long LastUsed;
}
