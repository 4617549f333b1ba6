using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

/// <summary>
/// The Lua scripts, one per algorithm. Each runs as one atomic step on the server: it reads the clock (the server's
/// <c>TIME</c>, or the client's microseconds when <c>@Now</c> is not negative), decides, writes, sets a TTL on every key it
/// wrote, and returns <c>{admitted, retry after µs, remaining, decision µs}</c>. Amounts are integers below 2^53, where Lua's
/// numbers are exact; the rules check that at construction.
/// </summary>
/// <remarks>
/// A TTL runs on the server's own clock, not on the decisions' clock: it is the time the state can still matter plus a
/// second, so that a client clock (<see cref="RedisLimiterOptions.ClientClock"/>) running a little slower than the server's
/// never sees its state expire before its window ends (which would forget admissions and let a window's permits in twice).
/// </remarks>
/// <remarks>
/// A permit count of 0 asks whether at least one permit is free, and writes nothing (as the in-box limiters answer it).
/// <see cref="LuaScript"/> sends each script by its SHA (EVALSHA) and sends the text again when the server has lost it
/// (a <c>SCRIPT FLUSH</c>, a restart or a failover).
/// </remarks>
internal static class LuaScripts
{
    /// <summary>The decision's time in µs: the client's when <c>@Now</c> is not negative, else the server's <c>TIME</c>.</summary>
    internal const string ReadClock = """
        local now = tonumber(@Now)
        if now < 0 then
          local t = redis.call('TIME')
          now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        end
        local limit = tonumber(@Limit)
        """;

    /// <summary>
    /// The counter's clock: <c>asked</c> is the caller's time, and <c>later</c> the start of the latest segment the key holds
    /// when that is later than the caller's clock (a client clock behind another's, or the server's stepped
    /// back), else nil. Deciding in the caller's earlier segment would count without what a clock ahead dropped as over. A
    /// later segment counts even at 0 (refunded or given back): its writer dropped the older segments all the same.
    /// </summary>
    internal const string CounterLater = """

        local segment = tonumber(@Segment)
        local segments = tonumber(@Segments)
        local asked = now
        local fields = redis.call('HGETALL', @Key)
        local later = nil
        for i = 1, #fields, 2 do
          local start = tonumber(fields[i]) * segment
          if start > now and (later == nil or start > later) then later = start end
        end
        """;

    /// <summary>
    /// The counter's count at <c>now</c> (after <see cref="CounterLater"/>): sums segments e-S..e into <c>used</c> and lists
    /// the older ones in <c>stale</c>, for <c>drop_stale()</c> to delete when the call writes (a call that writes nothing, a
    /// probe or a refusal, leaves the key's time where it was, so it must not drop what a caller behind it still counts);
    /// <c>retry_after(excess)</c> is the time on the caller's clock until the oldest counted segments free <c>excess</c>
    /// permits (a segment j is counted until segment j+S+1).
    /// </summary>
    internal const string CounterCount = """

        local current = math.floor(now / segment)
        local oldest = current - segments
        local used = 0
        local counted = {}
        local stale = {}
        for i = 1, #fields, 2 do
          local index = tonumber(fields[i])
          if index < oldest then
            stale[#stale + 1] = fields[i]
          else
            local count = tonumber(fields[i + 1])
            used = used + count
            counted[#counted + 1] = {index, count}
          end
        end
        local function retry_after(excess)
          table.sort(counted, function(a, b) return a[1] < b[1] end)
          local freed = 0
          for _, entry in ipairs(counted) do
            freed = freed + entry[2]
            if freed >= excess then return (entry[1] + segments + 1) * segment - asked end
          end
          return (segments + 1) * segment + now - asked
        end
        local function drop_stale()
          for _, field in ipairs(stale) do redis.call('HDEL', @Key, field) end
        end
        """;

    /// <summary>Sets the key's TTL to <c>ms</c> unless it already runs longer: a key that counts a later time must outlive it.</summary>
    internal const string Extend = """

        local function extend(ms)
          if redis.call('PTTL', @Key) < ms then redis.call('PEXPIRE', @Key, ms) end
        end
        """;

    /// <summary>
    /// The fixed window's count: the current window's index and end, its count, and <c>later</c> when the key already
    /// counts a later window (a client clock behind, or a call delayed past the boundary). Deciding in the earlier window
    /// would reset the later window's count, so a script refuses then, until the caller's clock reaches it: at
    /// <c>stored * window</c>, which may be windows past the caller's own window's end.
    /// </summary>
    internal const string FixedWindowCount = """

        local window = tonumber(@Window)
        local current = math.floor(now / window)
        local ends = (current + 1) * window
        local state = redis.call('HMGET', @Key, 'w', 'c')
        local stored = tonumber(state[1])
        local later = stored ~= nil and stored > current
        local count = 0
        if stored == current then count = tonumber(state[2]) end
        """;

    private const string Clock = ReadClock + """

        local permits = tonumber(@Permits)
        """;

    /// <summary>
    /// Fixed window, aligned to the Unix epoch: a hash (w = window index, c = permits counted in it). Invariant: the
    /// permits admitted in window k are at most the limit.
    /// </summary>
    public static readonly LuaScript FixedWindow = LuaScript.Prepare(Clock + FixedWindowCount + """

        if later then return {0, stored * window - now, 0, now} end
        if count + permits <= limit and (permits > 0 or count < limit) then
          if permits > 0 then
            redis.call('HSET', @Key, 'w', current, 'c', count + permits)
            redis.call('PEXPIRE', @Key, math.ceil((ends - now) / 1000) + 1000)
          end
          return {1, 0, limit - count - permits, now}
        end
        return {0, ends - now, limit - count, now}
        """);

    /// <summary>
    /// Token bucket with continuous refill: a hash (t = tokens in units of 1/period µs, s = last refill µs). Invariant:
    /// in any interval of length T, admissions are at most limit + rate × T. A server clock that steps back, or a client
    /// clock behind another node's, refills nothing until it passes the last refill again, and decides at that refill:
    /// the decision's time (what the script returns) is the later of the two, as a counter's and a log's are.
    /// </summary>
    public static readonly LuaScript TokenBucket = LuaScript.Prepare(Clock + """

        local period = tonumber(@Period)
        local rate = tonumber(@Rate)
        local full = limit * period
        local state = redis.call('HMGET', @Key, 't', 's')
        local tokens = full
        local last = now
        if state[1] then
          tokens = tonumber(state[1])
          last = tonumber(state[2])
          if now > last then
            tokens = tokens + (now - last) * rate
            last = now
          end
          -- Never above the full bucket, whatever the clock: a state written under a larger limit (a limit lowered since)
          -- read at a time not later than its last refill would otherwise spend the old balance.
          tokens = math.min(full, tokens)
        end
        local need = math.max(permits, 1) * period
        if tokens >= need then
          if permits > 0 then
            tokens = tokens - permits * period
            redis.call('HSET', @Key, 't', tokens, 's', last)
            redis.call('PEXPIRE', @Key, math.ceil(((full - tokens) / rate + math.max(last - now, 0)) / 1000) + 1000)
          end
          return {1, 0, math.floor(tokens / period), last}
        end
        return {0, math.ceil((need - tokens) / rate) + math.max(last - now, 0), math.floor(tokens / period), last}
        """);

    /// <summary>
    /// Segmented sliding window: a hash (segment index → permits). An admission in segment e counts segments e-S..e,
    /// which cover the last W whole. Invariant: at most the limit in any interval of length W; a permit is counted up to
    /// one segment longer than W (conservative).
    /// </summary>
    /// <remarks>
    /// A caller whose clock is behind a later segment the key counts decides in that segment (its stamp is that segment's
    /// start): the key's time never goes back, and a few milliseconds of skew between nodes at a boundary refuse nothing.
    /// </remarks>
    public static readonly LuaScript SlidingWindowCounter = LuaScript.Prepare(Clock + CounterLater + """

        if later then now = later end
        """ + CounterCount + Extend + """

        if used + permits <= limit and (permits > 0 or used < limit) then
          if permits > 0 then
            redis.call('HINCRBY', @Key, current, permits)
            drop_stale()
            extend(math.ceil(((current + segments + 1) * segment - asked) / 1000) + 1000)
          end
          return {1, 0, limit - used - permits, now}
        end
        return {0, retry_after(used + math.max(permits, 1) - limit), math.max(limit - used, 0), now}
        """);

    /// <summary>
    /// Exact sliding-window log: a sorted set of one member per permit, scored by its decision µs. Invariant: for every
    /// x, the permits stamped in [x, x + W) are at most the limit. Memory: one member per permit of the limit.
    /// </summary>
    public static readonly LuaScript SlidingWindowLog = LuaScript.Prepare(Clock + Extend + """

        local window = tonumber(@Window)

        -- A clock behind the key's newest decision (a client clock behind another's, or the server's stepped back) decides
        -- at that decision's time: the key's time never goes back, so what it counts is never dropped early, nor its TTL
        -- cut short. Waits are measured on the caller's own clock.
        local asked = now
        local newest = redis.call('ZRANGE', @Key, -1, -1, 'WITHSCORES')
        if newest[2] and tonumber(newest[2]) > now then now = tonumber(newest[2]) end

        -- Permits older than the window are dropped only by a call that writes: one that writes nothing (a probe, a
        -- refusal) leaves the key's time where it was, and a caller behind its own clock still counts them.
        local used = redis.call('ZCOUNT', @Key, now - window + 1, '+inf')
        if used + permits <= limit and (permits > 0 or used < limit) then
          if permits > 0 then
            redis.call('ZREMRANGEBYSCORE', @Key, '-inf', now - window)
            for i = 1, permits do
              redis.call('ZADD', @Key, now, @Nonce .. ':' .. i)
            end
            extend(math.ceil((now + window - asked) / 1000) + 1000)
          end
          return {1, 0, limit - used - permits, now}
        end
        local excess = used + math.max(permits, 1) - limit
        local oldest = redis.call('ZRANGEBYSCORE', @Key, now - window + 1, '+inf', 'WITHSCORES', 'LIMIT', excess - 1, 1)
        return {0, tonumber(oldest[2]) + window - asked, math.max(limit - used, 0), now}
        """);
}
