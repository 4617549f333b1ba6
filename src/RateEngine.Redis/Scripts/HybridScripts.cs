using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

/// <summary>
/// The hybrid mode's scripts: reserve a block of permits for one node's local use, and give back what a block did not use.
/// A reservation returns <c>{granted, retry after µs, valid for µs, decision µs, period}</c>: the node may use the granted
/// permits only while the period they were counted in lasts (the window, or the counter's segment), so every permit used
/// counts in Redis for every window in which it was used.
/// </summary>
/// <remarks>
/// A reservation grants at least <c>@Need</c> (the permits of the request waiting for it) or nothing, and at most
/// <c>@Want</c>; beyond <c>@Need</c> it takes at most half of what is left, so blocks shrink toward one permit near the cap
/// and several nodes share the last permits instead of one node holding them all.
/// </remarks>
internal static class HybridScripts
{
    private const string Clock = LuaScripts.ReadClock + """

        local need = tonumber(@Need)
        local want = tonumber(@Want)
        local function grant(available)
          if available < need then return 0 end
          return math.min(want, math.max(need, math.ceil(available / 2)))
        end
        """;

    public static readonly LuaScript FixedWindowReserve = LuaScript.Prepare(Clock + LuaScripts.FixedWindowCount + """

        if later then return {0, stored * window - now, 0, now, current} end
        local granted = grant(limit - count)
        if granted == 0 then
          return {0, ends - now, 0, now, current}
        end
        redis.call('HSET', @Key, 'w', current, 'c', count + granted)
        redis.call('PEXPIRE', @Key, math.ceil((ends - now) / 1000) + 1000)
        return {granted, 0, ends - now, now, current}
        """);

    /// <summary>Gives back <c>@Returned</c> permits of a block counted in window <c>@Period</c>, if that window is still current.</summary>
    public static readonly LuaScript FixedWindowReturn = LuaScript.Prepare("""
        local state = redis.call('HMGET', @Key, 'w', 'c')
        if tonumber(state[1]) == tonumber(@Period) then
          redis.call('HSET', @Key, 'c', math.max(0, tonumber(state[2]) - tonumber(@Returned)))
          return 1
        end
        return 0
        """);

    /// <remarks>
    /// A caller whose clock is behind a later segment the key counts is refused until its clock reaches it (a cached
    /// refusal; a refill keeps the node's block): a block counted in the later segment but used on the node's earlier clock
    /// would not count in the windows its uses fall in.
    /// </remarks>
    public static readonly LuaScript SlidingWindowCounterReserve = LuaScript.Prepare(Clock + LuaScripts.CounterLater + LuaScripts.CounterCount + LuaScripts.Extend + """

        local ends = (current + 1) * segment
        if later then return {0, later - now, 0, now, current} end
        local granted = grant(limit - used)
        if granted == 0 then
          return {0, retry_after(used + need - limit), 0, now, current}
        end
        redis.call('HINCRBY', @Key, current, granted)
        drop_stale()
        extend(math.ceil((segments + 1) * segment / 1000) + 1000)
        return {granted, 0, ends - now, now, current}
        """);

    /// <summary>Gives back <c>@Returned</c> permits of a block counted in segment <c>@Period</c>, while that segment is counted.</summary>
    public static readonly LuaScript SlidingWindowCounterReturn = LuaScript.Prepare("""
        local count = tonumber(redis.call('HGET', @Key, @Period))
        if count then
          redis.call('HSET', @Key, @Period, math.max(0, count - tonumber(@Returned)))
          return 1
        end
        return 0
        """);
}
