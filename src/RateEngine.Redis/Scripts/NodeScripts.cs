using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

/// <summary>
/// The live-node registry behind <see cref="RedisLiveNodeOptions"/>: a sorted set of node ids scored by when each stops
/// counting (µs on the decisions' clock). One script renews a node and counts the live ones atomically, so a count never
/// includes a node past its expiry; the set itself carries a TTL, so nodes that all die leave nothing behind.
/// </summary>
internal static class NodeScripts
{
    /// <summary>Renews <c>@Node</c> until now + <c>@Expiry</c>, drops expired nodes, returns how many are live (itself included).</summary>
    public static readonly LuaScript Heartbeat = LuaScript.Prepare("""
        local now = tonumber(@Now)
        if now < 0 then
          local t = redis.call('TIME')
          now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        end
        local expiry = tonumber(@Expiry)
        -- A second of margin past a registration's expiry, as concurrency slots have: on client clocks a node whose clock
        -- runs ahead would otherwise drop the others' registrations, count fewer nodes and take a larger share.
        redis.call('ZREMRANGEBYSCORE', @Key, '-inf', now - 1000000)
        redis.call('ZADD', @Key, now + expiry, @Node)
        -- Lengthen the set's life, never shorten it: a node configured with a shorter expiry (a rolling deploy mixes them)
        -- that beats last and leaves would otherwise take the registrations of longer-lived nodes with the set.
        local ttl = math.ceil(expiry / 1000) + 1000
        if redis.call('PTTL', @Key) < ttl then redis.call('PEXPIRE', @Key, ttl) end
        return redis.call('ZCARD', @Key)
        """);

    /// <summary>A limiter disposed leaves at once, so the others' next heartbeat no longer counts it.</summary>
    public static readonly LuaScript Leave = LuaScript.Prepare("""
        return redis.call('ZREM', @Key, @Node)
        """);
}
