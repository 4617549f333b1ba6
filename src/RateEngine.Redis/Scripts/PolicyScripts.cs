namespace RateEngine.Redis.Scripts;

/// <summary>
/// The layered policy's scripts: one decides a request on every layer at once, one settles it (refunds, overruns and
/// released slots on every layer at once), one reads usage. Each is one atomic step on the server, so a policy's
/// all-or-nothing rule holds across every node: a script checks every layer before it writes any.
/// </summary>
/// <remarks>
/// <para>Arguments: <c>ARGV[1]</c> is the clock (-1: the server's <c>TIME</c>; otherwise the client's µs since the Unix epoch),
/// <c>ARGV[2]</c> the lease id (acquire and settle), then one group of <see cref="Stride"/> values per layer, whose key is <c>KEYS[i]</c>: kind, limit, amount, and the rule's
/// parameters (see <see cref="Policies.RedisPolicyLayer{TContext}.Kind"/>). Limits and amounts are integers of at most 2^52, so that every sum of a count and an amount stays within 2^53, where Lua's numbers are exact; counts change by <c>HINCRBY</c>, exact on the server, and saturate at 2^53 (overruns are counted past the limit), where every limit is passed all the same.</para>
/// <para>Every key a script writes gets a TTL of the time its state can still matter plus a second, so a node that dies
/// leaves nothing behind for long: a concurrency slot of a lease never disposed expires after the lease timeout and a
/// second (the margin for nodes' clocks a second apart).</para>
/// </remarks>
internal static class PolicyScripts
{
    /// <summary>Values per layer after <c>ARGV[2]</c>: kind, limit, amount, p1..p5.</summary>
    public const int Stride = 8;

    /// <summary>How long the settle script remembers a lease's last sequence number (the <c>PX</c> of its marker): 5 minutes.</summary>
    public const int SettleMemoryMilliseconds = 300_000;

    /// <summary>
    /// Shared by all three scripts: reads the clock and, per layer, the state its key holds at <c>now</c>
    /// (<c>inspect(i)</c> returns a table with <c>used</c> and what the writes need) without writing anything that counts.
    /// </summary>
    private const string Preamble = """
        local now = tonumber(ARGV[1])
        if now < 0 then
          local t = redis.call('TIME')
          now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        end
        local n = (#ARGV - 2) / 8
        -- 2^53: Lua's numbers are exact below it, so counts saturate there and replies (usage, waits) stop there.
        local most = 9007199254740992
        -- A concurrency slot counts a second past its lease's timeout (µs): nodes' client clocks may be a second apart, and
        -- a node ahead compares the slot's expiry with its own now (without it, a timeout under 1.5 s let a node 0.8 s ahead
        -- see a live stream's slot as expired between its renewals, and admit a second stream).
        local slot_margin = 1000000
        local function arg(i, k) return tonumber(ARGV[2 + (i - 1) * 8 + k]) end

        -- The calendar period containing now among the three the client computed (its clock may differ from the server's).
        local function period(i)
          for k = 4, 6 do
            local from, to = arg(i, k), arg(i, k + 1)
            if now >= from and now < to then return from, to end
          end
          return nil, nil
        end

        local function inspect(i)
          local key, kind, limit = KEYS[i], arg(i, 1), arg(i, 2)
          local s = {kind = kind, limit = limit, used = 0, reset = 0}
          if kind == 1 then -- fixed window: hash w (window index), c (count)
            local window = arg(i, 4)
            s.current = math.floor(now / window)
            s.ends = (s.current + 1) * window
            local st = redis.call('HMGET', key, 'w', 'c')
            s.stored = tonumber(st[1])
            if s.stored == s.current then s.used = tonumber(st[2]) end
            if s.stored and s.stored > s.current then s.used = tonumber(st[2]); s.later = true; s.wait = s.stored * window end
            if s.used > 0 then s.reset = s.ends - now end
            s.ttl = s.ends - now
          elseif kind == 2 then -- sliding-window counter: hash segment index -> count
            local segment, segments = arg(i, 4), arg(i, 5)
            s.current = math.floor(now / segment)
            local fields = redis.call('HGETALL', key)
            -- A later segment than the clock's, even one refunded to 0 (a node clock behind another's, or the server's stepped
            -- back; its writer dropped the older segments all the same): the layer decides and counts there, so nothing it counts is dropped and a few milliseconds of skew at
            -- a boundary refuse nothing. A hybrid block is not taken from it (s.ahead): its uses on the node's earlier
            -- clock would not count in the windows they fall in.
            for j = 1, #fields, 2 do
              local index = tonumber(fields[j])
              if index > s.current then s.current = index; s.ahead = true; s.wait = index * segment end
            end
            local oldest = s.current - segments
            s.counted = {}
            s.stale = {}
            for j = 1, #fields, 2 do
              local index = tonumber(fields[j])
              if index < oldest then
                s.stale[#s.stale + 1] = fields[j]
              else
                local count = tonumber(fields[j + 1])
                s.used = s.used + count
                s.counted[#s.counted + 1] = {index, count}
              end
            end
            table.sort(s.counted, function(a, b) return a[1] < b[1] end)
            s.retry = function(excess)
              local freed = 0
              for _, entry in ipairs(s.counted) do
                freed = freed + entry[2]
                if freed >= excess then return (entry[1] + segments + 1) * segment - now end
              end
              return math.max((segments + 1) * segment, (s.current + segments + 1) * segment - now)
            end
            s.oldest = oldest
            s.ttl = math.max((segments + 1) * segment, (s.current + segments + 1) * segment - now)
            if #s.counted > 0 then s.reset = (s.counted[#s.counted][1] + segments + 1) * segment - now end
          elseif kind == 3 then -- sliding-window log: sorted set of permits scored by their time
            local window = arg(i, 4)
            s.window = window
            -- The key's time never goes back: a clock behind its newest permit decides at that permit's time, so what a
            -- clock ahead dropped as over is over on the key's time too. Waits are measured on the caller's clock.
            local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
            s.now = now
            if newest[2] and tonumber(newest[2]) > now then s.now = tonumber(newest[2]) end
            s.used = redis.call('ZCOUNT', key, s.now - window + 1, '+inf')
            s.ttl = window + s.now - now
            if s.used > 0 then s.reset = tonumber(newest[2]) + window - now end
          elseif kind == 4 then -- token bucket: hash t (tokens x period), s (last refill), a (last admission's tag), l (its lease); continuous refill
            local per, rate = arg(i, 4), arg(i, 5)
            local full = limit * per
            local st = redis.call('HMGET', key, 't', 's', 'a', 'l')
            local tokens, last = full, now
            if st[1] then
              tokens, last = tonumber(st[1]), tonumber(st[2])
              if now > last then tokens = tokens + (now - last) * rate; last = now end
              tokens = math.min(full, tokens) -- never above the full bucket (a limit lowered since), whatever the clock
            end
            s.per, s.rate, s.full, s.tokens, s.last = per, rate, full, tokens, last
            s.admitted = tonumber(st[3]) or -1
            s.admittedBy = st[4]
            s.used = math.min(math.ceil((full - tokens) / per), most) -- an integer reply, whatever the debt
            s.ttl = math.ceil((full - tokens) / rate) + (last - now)
            if s.ttl < per then s.ttl = per end
            if tokens < full then s.reset = math.min(math.ceil((full - tokens) / rate), most) end -- an integer reply
          elseif kind == 5 then -- calendar budget: hash p (period start), u (used in it), d (charged while no period could be placed)
            local from, to = period(i)
            local st = redis.call('HMGET', key, 'p', 'u', 'd')
            s.stored = tonumber(st[1])
            s.carried = tonumber(st[3]) or 0
            s.from, s.to = from, to
            if not from then s.skewed = true
            else
              if s.stored == from then s.used = tonumber(st[2]) end
              -- Waits until the later period starts, or at least until the caller's own ends (a start read from another
              -- node's time-zone rules may fall before now).
              if s.stored and s.stored > from then s.used = tonumber(st[2]); s.later = true; s.wait = math.max(s.stored, to) end
              s.held = s.used
              s.used = s.used + s.carried
              if s.used > 0 then s.reset = to - now end
              s.ttl = to - now
            end
          elseif kind == 6 then -- concurrency: sorted set of lease ids scored by when they expire
            s.used = redis.call('ZCOUNT', key, now + 1, '+inf')
            s.ttl = arg(i, 4) + slot_margin
          end
          -- Counts saturate at 2^53 (see add): one written larger (before they did) is read and reported as 2^53, an
          -- integer reply, not a double past 2^63 that the reply's conversion would wrap.
          s.used = math.min(s.used, most)
          return s
        end

        -- Never shortens a TTL: a key that already counts a later window or period (a clock behind) must outlive it.
        local function expire(i, s)
          -- At most 10^15 ms (31,700 years): a bucket's debt may be any size, and PEXPIRE refuses a time past 2^63 ms.
          local ms = math.min(math.ceil(s.ttl / 1000) + 1000, 1000000000000000)
          if redis.call('PTTL', KEYS[i]) < ms then redis.call('PEXPIRE', KEYS[i], ms) end
        end

        -- Counts amount now on a fixed window, counter or calendar layer (past the limit if need be: an admission checked it
        -- first, an overrun was spent), in the state that already counts a later window or period if the key holds one.
        -- Returns the tag a refund names: the window, segment or period it was counted in.
        -- A count saturates at 2^53 (most; a field of the key, holding now): every limit is at most 2^52, so a saturated count
        -- refuses as any larger one would until its window ends, where repeated overruns would otherwise take HINCRBY past
        -- 2^63 and stop the script half-way, and Lua would read the count inexactly long before that.
        local function add(key, field, amount, holding)
          amount = math.min(amount, most - holding)
          if amount > 0 then redis.call('HINCRBY', key, field, amount) end
        end

        local function count(i, s, amount)
          local key = KEYS[i]
          if s.kind == 1 then
            if s.later or s.stored == s.current then add(key, 'c', amount, s.used)
            else redis.call('HSET', key, 'w', s.current, 'c', math.min(amount, most)) end
            return s.current
          elseif s.kind == 2 then
            add(key, s.current, amount, tonumber(redis.call('HGET', key, s.current) or '0'))
            for _, stale in ipairs(s.stale) do redis.call('HDEL', key, stale) end
            return s.current
          end
          if s.skewed then
            -- The server's now is in none of the node's periods (a node clock a period off): the charge is carried and counts
            -- in every read until a write that places its period takes it in, rather than in a field that write would reset.
            add(key, 'd', amount, s.carried)
            s.ttl = 90000000000
            return s.from
          end
          if s.later or s.stored == s.from then add(key, 'u', amount + s.carried, s.held)
          else redis.call('HSET', key, 'p', s.from, 'u', math.min(amount + s.carried, most)) end
          if s.carried > 0 then redis.call('HDEL', key, 'd') end
          return s.from
        end

        -- Gives back up to want counted on a fixed window, counter or calendar layer in the window, segment or period tag,
        -- while the layer still counts it (after that, nothing: as in process). Returns how much came back.
        local function uncount(i, s, want, tag)
          local key = KEYS[i]
          if s.kind == 2 then
            if tag < s.oldest then return 0 end
            local back = math.min(want, tonumber(redis.call('HGET', key, tag) or '0'))
            if back > 0 then redis.call('HINCRBY', key, tag, -back) end
            return back
          end
          if s.stored ~= tag then return 0 end
          local field = (s.kind == 1) and 'c' or 'u'
          local counted = tonumber(redis.call('HGET', key, field))
          local back = math.min(want, counted)
          if back > 0 then redis.call('HINCRBY', key, field, -back) end
          return back
        end
        """;

    /// <summary>
    /// Acquire: <c>KEYS[n + 1]</c> is the policy's pause switch (its value is the operator's reason). Checks every layer,
    /// then writes every layer or none. Returns <c>{0, 0, 0, now, reason}</c> while paused, otherwise
    /// <c>{1, 0, 0, now, used1, reset1 .. usedN, resetN, tag1..tagN}</c> (the usage after the admission; a tag says where a
    /// layer counted the request: its window, segment or period) or <c>{0, first refusing layer, longest retry µs among the
    /// refusing layers, now, used1, reset1 .. usedN, resetN, every refusing layer}</c>; a first layer of -i means layer i's
    /// calendar period could not be placed on the server's clock (client and server clocks a period apart).
    /// </summary>
    public const string Acquire = Preamble + """

        local paused = redis.call('GET', KEYS[n + 1])
        if paused then return {0, 0, 0, now, paused} end

        local lease = ARGV[2]
        local states = {}
        local refusing = {}
        local first, longest = 0, 0
        for i = 1, n do
          local s = inspect(i)
          local amount = arg(i, 3)
          local ok, retry = false, 0
          local kind, limit = s.kind, s.limit
          if s.skewed then
            if first == 0 then first = -i end
          elseif s.later then
            retry = s.wait - now -- until the caller's clock reaches the later window, segment or period
          elseif kind == 1 or kind == 5 then
            ok = s.used + amount <= limit and (amount > 0 or s.used < limit)
            if not ok then retry = (kind == 1) and (s.ends - now) or (s.to - now) end
          elseif kind == 2 then
            ok = s.used + amount <= limit and (amount > 0 or s.used < limit)
            if not ok then retry = s.retry(math.max(1, s.used + amount - limit)) end
          elseif kind == 3 then
            ok = s.used + amount <= limit and (amount > 0 or s.used < limit)
            if not ok then
              local excess = math.max(1, s.used + amount - limit)
              local oldest = redis.call('ZRANGEBYSCORE', KEYS[i], s.now - s.window + 1, '+inf', 'WITHSCORES', 'LIMIT', excess - 1, 1)
              retry = oldest[2] and (tonumber(oldest[2]) + s.window - now) or s.window
            end
          elseif kind == 4 then
            local need = math.max(amount, 1) * s.per
            ok = s.tokens >= need
            if not ok then retry = math.min(math.ceil((need - s.tokens) / s.rate) + math.max(0, s.last - now), most) end
          elseif kind == 6 then
            -- No retry time: a slot comes back when a request ends, which nobody knows (as in process).
            ok = s.used + amount <= limit and (amount > 0 or s.used < limit)
          end
          if not ok then
            if first == 0 then first = i end
            if retry > longest then longest = retry end
            refusing[#refusing + 1] = i
          end
          s.amount = amount
          states[i] = s
        end
        if first ~= 0 then
          local refused = {0, first, longest, now}
          for i = 1, n do
            refused[#refused + 1] = states[i].used
            refused[#refused + 1] = math.max(0, states[i].reset)
          end
          for _, i in ipairs(refusing) do refused[#refused + 1] = i end
          return refused
        end

        local result = {1, 0, 0, now}
        for i = 1, n do
          local s, key, amount = states[i], KEYS[i], states[i].amount
          local tag = 0
          if amount > 0 then
            if s.kind == 1 or s.kind == 2 or s.kind == 5 then
              tag = count(i, s, amount)
            elseif s.kind == 3 then
              redis.call('ZREMRANGEBYSCORE', key, '-inf', s.now - s.window)
              for j = 1, amount do redis.call('ZADD', key, s.now, lease .. ':' .. i .. ':' .. j) end
              tag = s.now
            elseif s.kind == 4 then
              -- The tag names this admission: a refund is exact only while no admission or charge followed it. Tags only grow
              -- on a key, even when a node's clock is behind (one more than the last), and start from the time on a key that
              -- expired and came back, where an older lease's tag may come round again (its node's clock was ahead, or the
              -- same microsecond): so the admission's lease is kept beside it, and a refund must name both.
              tag = math.max(s.admitted + 1, now)
              redis.call('HSET', key, 't', s.tokens - amount * s.per, 's', s.last, 'a', tag, 'l', lease .. ':' .. i)
              s.ttl = s.ttl + math.ceil(amount * s.per / s.rate)
            elseif s.kind == 6 then
              redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
              redis.call('ZADD', key, now + arg(i, 4) + slot_margin, lease .. ':' .. i)
            end
            expire(i, s)
          end
          states[i].tag = tag
        end
        -- The usage each layer shows after the admission (for the response's headers), then the tags.
        for i = 1, n do
          local after = inspect(i)
          result[#result + 1] = after.used
          result[#result + 1] = math.max(0, after.reset)
        end
        for i = 1, n do result[#result + 1] = states[i].tag end
        return result
        """;

    /// <summary>
    /// Settle: <c>ARGV[2]</c> is <c>leaseId#sequence</c> and <c>KEYS[n + 1]</c> the lease's settle marker, so a settle sent
    /// again after a lost reply is applied once (<c>{now, -1}</c> answers a replay). The marker lives
    /// <see cref="SettleMemoryMilliseconds"/> from the lease's last settle, one key per lease: a client sends a refund again
    /// only within a minute less than that (after, without its refunds: a charge or a release applied twice is stricter).
    /// Per layer
    /// <c>p5</c> is the tag its acquire returned and the amount is signed:
    /// negative refunds that much (only where the request was counted, while that window, segment or period still counts
    /// it; a bucket gets its tokens back up to full, only while no admission or charge followed its own), positive charges an overrun now (past the limit if need be), and on a
    /// concurrency layer a positive amount releases the lease's slot and a negative one renews it for another lease timeout
    /// while it still counts. Returns what came back per layer.
    /// </summary>
    public const string Settle = Preamble + """

        -- Applied once: a settle whose reply was lost may be sent again with the same sequence number.
        local lease, seq = string.match(ARGV[2], '^(.*)#(%d+)$')
        seq = tonumber(seq)
        if seq <= tonumber(redis.call('GET', KEYS[n + 1]) or '0') then return {now, -1} end

        -- Every layer is read before anything is written: a script stopped by an error keeps what it wrote, so a key of
        -- another type (WRONGTYPE) met half-way would leave the layers before it settled and the ones after it not, for good.
        local states = {}
        for i = 1, n do
          if arg(i, 3) ~= 0 then states[i] = inspect(i) end
        end
        redis.call('SET', KEYS[n + 1], seq, 'PX', 300000)

        local result = {now}
        for i = 1, n do
          local amount = arg(i, 3)
          local tag = arg(i, 8)
          local key = KEYS[i]
          local back = 0
          if amount ~= 0 then
            local s = states[i]
            local kind = s.kind
            if kind == 6 and amount < 0 then
              -- A renewal (an open lease's, every third of the timeout): its slot counts while the lease is open, added
              -- back if it expired meanwhile (renewals lost in an outage longer than the timeout). The stream still runs:
              -- counting it is stricter than letting another request take its place, and only an open lease renews (a
              -- released slot's renewal is older than its release, which the sequence marker orders before it).
              redis.call('ZADD', key, now + arg(i, 4) + slot_margin, lease .. ':' .. i)
              expire(i, s)
            elseif kind == 6 then
              back = redis.call('ZREM', key, lease .. ':' .. i)
            elseif amount < 0 then
              local want = -amount
              if kind == 1 or kind == 2 or kind == 5 then
                back = uncount(i, s, want, tag)
              elseif kind == 3 then
                -- The lease's own permits, while they still count: removing one frees exactly what it took.
                for j = 1, want do
                  local member = lease .. ':' .. i .. ':' .. j
                  local score = redis.call('ZSCORE', key, member)
                  if score and tonumber(score) > s.now - s.window then back = back + redis.call('ZREM', key, member) end
                end
              elseif kind == 4 and tag == s.admitted and s.admittedBy == lease .. ':' .. i then
                -- Only while no admission or charge followed this one: then the bucket is where it would be without it, less
                -- the refill it missed, and giving the tokens back up to full is exact. After another admission the tokens
                -- may have come back by refill already (the bucket full in between), and a refund would pass the burst.
                local room = math.floor((s.full - s.tokens) / s.per)
                back = math.min(want, room)
                redis.call('HSET', key, 't', s.tokens + back * s.per, 's', s.last)
                expire(i, s)
              end
            else
              if kind == 1 or kind == 2 or kind == 5 then
                count(i, s, amount)
                expire(i, s)
              elseif kind == 4 then
                -- An overrun was spent, so it is owed past the burst, however large (past 2^53 units only to the nearest
                -- part in 10^16); the key's TTL and the waits reported stop where Redis and the client take them (expire).
                redis.call('HSET', key, 't', s.tokens - amount * s.per, 's', s.last, 'a', math.max(s.admitted + 1, now), 'l', '')
                s.ttl = s.ttl + math.ceil(amount * s.per / s.rate)
                expire(i, s)
              end
            end
          end
          result[#result + 1] = back
        end

        return result
        """;

    /// <summary>
    /// Reserve (the hybrid mode): blocks of fixed-window, counter or calendar layers' keys for one node's local use, one per
    /// key, in one call. <c>KEYS[n + 1]</c> is the pause switch; <c>ARGV[2]</c> holds <c>need:want:debt</c> per key,
    /// separated by <c>;</c>. Per key, first the node's overruns that its blocks could not cover are counted (past the limit
    /// if need be: they were spent), then at least <c>need</c> and at most <c>want</c> are granted, or nothing; beyond
    /// <c>need</c> at most half of what is left, so blocks shrink toward one near the cap and several nodes share the last
    /// of it. Returns per key <c>{granted, retry µs, valid for µs, tag, used after}</c>, then <c>now</c> and the pause
    /// reason (or ''): the node may use a grant only while the window, segment or period it was counted in (the tag) lasts.
    /// Paused, it grants nothing (debts are still counted).
    /// </summary>
    public const string Reserve = Preamble + """

        local asks = {}
        for need, want, debt in string.gmatch(ARGV[2], '(%d+):(%d+):(%d+)') do
          asks[#asks + 1] = {tonumber(need), tonumber(want), tonumber(debt)}
        end
        local paused = redis.call('GET', KEYS[n + 1]) or ''
        local result = {}
        for i = 1, n do
          local need, want, debt = asks[i][1], asks[i][2], asks[i][3]
          local s = inspect(i)
          if debt > 0 then
            count(i, s, debt)
            expire(i, s)
            s = inspect(i)
          end
          local granted, retry, valid, tag = 0, 0, 0, 0
          if s.skewed then
            -- A calendar period the node's clock could not place on the server's: refused for a second, until the clocks agree.
            retry = 1000000
          elseif paused == '' then
            local ends
            if s.kind == 1 then ends = s.ends elseif s.kind == 2 then ends = (s.current + 1) * arg(i, 4) else ends = s.to end
            if s.later or s.ahead then
              retry = s.wait - now
            else
              local available = s.limit - s.used
              if available >= need and available > 0 then granted = math.min(want, math.max(need, math.ceil(available / 2))) end
              if granted == 0 then
                if s.kind == 2 then retry = s.retry(math.max(1, s.used + math.max(need, 1) - s.limit)) else retry = ends - now end
              else
                tag = count(i, s, granted)
                expire(i, s)
                valid = ends - now
                s.used = s.used + granted
              end
            end
          end
          result[#result + 1] = granted
          result[#result + 1] = retry
          result[#result + 1] = valid
          result[#result + 1] = tag
          result[#result + 1] = s.used
        end
        result[#result + 1] = now
        result[#result + 1] = paused
        return result
        """;

    /// <summary>
    /// Return (the hybrid mode): gives back, per key, the amount of its values (unused permits of a block) into the window,
    /// segment or period of its tag, while the layer still counts it.
    /// </summary>
    public const string Return = Preamble + """

        for i = 1, n do
          uncount(i, inspect(i), arg(i, 3), arg(i, 8))
        end
        return n
        """;

    /// <summary>Usage: per layer <c>{used, reset µs}</c> at the server's now, writing nothing.</summary>
    public const string Usage = Preamble + """

        local result = {now}
        for i = 1, n do
          local s = inspect(i)
          result[#result + 1] = s.used
          result[#result + 1] = math.max(0, s.reset)
        end
        return result
        """;
}
