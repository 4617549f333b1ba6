using System.Collections.Concurrent;
using RateEngine.Redis.Scripts;
using StackExchange.Redis;

namespace RateEngine.Redis.Hybrid;

/// <summary>
/// The hybrid mode's local side: per key, a block of permits reserved from Redis, taken by CAS; a reservation in flight is
/// shared by every caller that needs one, and one is started in the background when a block runs low, so callers rarely
/// wait. Unused permits go back when a block is replaced by one of a later period, when the key is idle and on dispose.
/// </summary>
internal sealed class LocalReservations : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, LocalKey> _keys = new(StringComparer.Ordinal);
    private readonly Func<LocalKey, RedisRule, long, long, Task<RedisResult>> _reserve;
    private readonly Func<LocalKey, RedisRule, long, long, Task> _return;
    private readonly TimeProvider _time;
    private readonly long _maxBlock;
    private readonly long _idleTicks;
    private readonly ITimer _sweeper;
    private readonly ConcurrentDictionary<string, RedisRule> _rules = new(StringComparer.Ordinal);
    private readonly Func<bool> _mayCall;

    public LocalReservations(
        RedisHybridOptions options,
        TimeProvider time,
        Func<LocalKey, RedisRule, long, long, Task<RedisResult>> reserve,
        Func<LocalKey, RedisRule, long, long, Task> giveBack,
        Func<bool> mayCall)
    {
        _mayCall = mayCall;
        _time = time;
        _maxBlock = options.MaxBlock;
        _idleTicks = (long)(options.IdleReturn.TotalSeconds * time.TimestampFrequency);
        _reserve = reserve;
        _return = giveBack;
        _sweeper = time.CreateTimer(static state => ((LocalReservations)state!).ReturnIdle(), this, options.IdleReturn, options.IdleReturn);
    }

    /// <summary>Keys held locally (tests).</summary>
    internal int KeyCount => _keys.Count;

    public LocalKey KeyOf(string partitionKey) => _keys.GetOrAdd(partitionKey, static key => new LocalKey(key));

    /// <summary>
    /// Serves from the key's live block: true when taken; false with <paramref name="refusedFor"/> set while a cached refusal
    /// lasts, or null when a reservation is needed.
    /// </summary>
    public bool TryTake(LocalKey key, RedisRule rule, long permits, out TimeSpan? refusedFor)
    {
        refusedFor = null;
        long now = _time.GetTimestamp();
        Volatile.Write(ref key.LastUsed, now);
        LocalBlock block = Volatile.Read(ref key.Block);
        if (now >= block.ExpiresAt)
        {
            return false;
        }

        if (block.Refused)
        {
            if (permits >= block.RefusedNeed)
            {
                refusedFor = _time.GetElapsedTime(now, block.ExpiresAt);
            }

            return false; // a smaller request asks Redis itself
        }

        if (!block.TryTake(permits))
        {
            return false;
        }

        if (_time.GetTimestamp() >= block.ExpiresAt)
        {
            return false; // descheduled across the period's end: the permit stays unused (counted in a period that is over)
        }

        // Low water: a quarter of the block left, so the next one is on its way before this one runs out.
        if (Volatile.Read(ref block.Remaining) * 4 < block.Granted && _mayCall())
        {
            RedisTasks.Observe(StartRefill(key, rule, need: 0));
        }

        return true;
    }

    /// <summary>
    /// The reservation in flight for the key, or a new one for at least <paramref name="need"/> permits (0 for a background
    /// refill, which installs nothing when Redis grants nothing). The caller takes from the installed block afterwards.
    /// </summary>
    public Task<LocalBlock> StartRefill(LocalKey key, RedisRule rule, long need)
    {
        _rules[key.PartitionKey] = rule;
        lock (key)
        {
            if (key.Refill is { IsCompleted: false } inFlight)
            {
                return inFlight;
            }

            Task<LocalBlock> refill = Refill(key, rule, need);
            key.Refill = refill;
            return refill;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _sweeper.DisposeAsync().ConfigureAwait(false);
        await Task.WhenAll(_keys.Values.Select(ReturnLeftover)).ConfigureAwait(false);
        _keys.Clear();
    }

    private async Task<LocalBlock> Refill(LocalKey key, RedisRule rule, long need)
    {
        // Never run a reservation under the key's lock, nor on the caller's context (a sync caller may be blocking it).
        await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
        long sent = _time.GetTimestamp();
        long want = Math.Max(need, Math.Clamp(Volatile.Read(ref key.NextSize), 1, _maxBlock));
        var reply = (long[])(await _reserve(key, rule, Math.Max(need, 0), want).ConfigureAwait(false))!;
        long granted = reply[0];
        long retryAfter = reply[1];
        long validFor = reply[2];
        long period = reply[4];
        LocalBlock old = Volatile.Read(ref key.Block);
        if (granted == 0)
        {
            if (need == 0)
            {
                return old; // a background refill near the cap: keep serving what is left
            }

            var refused = new LocalBlock(0, 0, sent + Ticks(retryAfter), period, refusedNeed: need);
            Install(key, rule, refused, old);
            return refused;
        }

        // Valid from before the call was sent: never past the period's end on the server.
        var block = new LocalBlock(granted, granted, sent + Ticks(validFor), period, refusedNeed: 0);
        Install(key, rule, block, old);
        return block;
    }

    private void Install(LocalKey key, RedisRule rule, LocalBlock block, LocalBlock old)
    {
        Volatile.Write(ref key.Block, block);
        long leftover = old.TakeAll();
        long served = old.Granted - leftover;
        Volatile.Write(ref key.NextSize, Math.Clamp(2 * served, 1, _maxBlock));
        if (leftover > 0)
        {
            if (!block.Refused && old.Period == block.Period)
            {
                Interlocked.Add(ref block.Remaining, leftover); // same period: just as valid in the new block
            }
            else if (_time.GetTimestamp() < old.ExpiresAt)
            {
                RedisTasks.Observe(_return(key, rule, old.Period, leftover));
            }
        }
    }

    private long Ticks(long microseconds) => (long)(microseconds * (_time.TimestampFrequency / 1_000_000.0));

    private void ReturnIdle()
    {
        long now = _time.GetTimestamp();
        foreach (KeyValuePair<string, LocalKey> entry in _keys)
        {
            LocalKey key = entry.Value;
            if (now - Volatile.Read(ref key.LastUsed) >= _idleTicks && key.Refill is not { IsCompleted: false })
            {
                RedisTasks.Observe(ReturnLeftover(key));
                _keys.TryRemove(entry);
                _rules.TryRemove(entry.Key, out _);
            }
        }
    }

    private Task ReturnLeftover(LocalKey key)
    {
        LocalBlock block = Volatile.Read(ref key.Block);
        long leftover = block.TakeAll();
        return leftover > 0 && _time.GetTimestamp() < block.ExpiresAt && _rules.TryGetValue(key.PartitionKey, out RedisRule? rule)
            ? _return(key, rule, block.Period, leftover)
            : Task.CompletedTask;
    }

}
