using RateEngine.Redis.Scripts;
using RateEngine.Timing;
using StackExchange.Redis;

namespace RateEngine.Redis;

/// <summary>
/// One limiter's registration as a live node (<see cref="RedisLiveNodeOptions"/>): a heartbeat script every interval on the
/// node's clock, and the last live count it read, which stays as it was while Redis does not answer.
/// </summary>
internal sealed class RedisNodeRegistry : IAsyncDisposable
{
    private readonly IDatabase _database;
    private readonly RedisKey _key;
    private readonly string _node = Guid.NewGuid().ToString("N");
    private readonly long _expiry;
    private readonly int _minimum;
    private readonly Func<long> _now;
    private readonly Action<int> _counted;
    private readonly ITimer _timer;
    private readonly TimeProvider _time;
    private readonly long _expiryTimestamps;
    /// <summary>
    /// A heartbeat's round trip past which its answer may have waited out an outage long enough to empty the set (every
    /// registration renewed one interval before it began would have expired): Expiry less one interval, at least one tick.
    /// </summary>
    private readonly long _heldTimestamps;

    /// <summary>Set when the connection failed or was restored: a restart may have lost the set whatever the round trip.</summary>
    private volatile bool _reconnected;
    private int _count;

    /// <summary>When the answers below <see cref="_count"/> began (on <see cref="_time"/>); <see cref="NoLowerCount"/> while none.</summary>
    private long _lowerSince = NoLowerCount;

    private const long NoLowerCount = long.MinValue;

    /// <summary>The highest of the answers below <see cref="_count"/> since <see cref="_lowerSince"/>.</summary>
    private int _highestLower;
    private int _beating;
    private volatile bool _disposed;

    /// <summary>Registers at once, then every interval; <paramref name="counted"/> hears each count Redis answered (at least the minimum).</summary>
    public RedisNodeRegistry(IDatabase database, string keyPrefix, RedisLiveNodeOptions options, TimeProvider time, Func<long> now, Action<int> counted)
    {
        _database = database;
        _key = keyPrefix + ":nodes";
        _expiry = options.Expiry.Ticks / 10;
        _minimum = options.MinimumNodeCount;
        _count = _minimum;
        _time = time;
        _expiryTimestamps = (long)(options.Expiry.TotalSeconds * time.TimestampFrequency);
        _heldTimestamps = Math.Max(1, (long)((options.Expiry - options.HeartbeatInterval).TotalSeconds * time.TimestampFrequency));
        database.Multiplexer.ConnectionFailed += OnConnectionChanged;
        database.Multiplexer.ConnectionRestored += OnConnectionChanged;
        _now = now;
        _counted = counted;
        _timer = ContextFreeTimer.Create(time, static state => ((RedisNodeRegistry)state!).Beat(), this, options.HeartbeatInterval, options.HeartbeatInterval);
        Beat(); // registered from the start, not one interval later
    }

    /// <summary>The live node count read last (the minimum until a heartbeat is answered).</summary>
    public int NodeCount => Volatile.Read(ref _count);

    public async ValueTask DisposeAsync()
    {
        _disposed = true;
        _database.Multiplexer.ConnectionFailed -= OnConnectionChanged;
        _database.Multiplexer.ConnectionRestored -= OnConnectionChanged;
        await _timer.DisposeAsync().ConfigureAwait(false);
        try
        {
            await _database.ScriptEvaluateAsync(NodeScripts.Leave, new { Key = _key, Node = _node }).ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException or ObjectDisposedException)
        {
            // Redis is down, or the app disposed its connection first: the registration expires on its own, and the
            // limiter's dispose goes on (its fallback and its blocks).
        }
    }

    private void OnConnectionChanged(object? sender, ConnectionFailedEventArgs e) => _reconnected = true;

    private void Beat()
    {
        // One heartbeat in flight at a time: a slow Redis must not pile them up.
        if (_disposed || Interlocked.Exchange(ref _beating, 1) == 1)
        {
            return;
        }

        RedisTasks.Observe(BeatAsync());
    }

    private async Task BeatAsync()
    {
        try
        {
            long sent = _time.GetTimestamp();
            var live = (long)(await _database.ScriptEvaluateAsync(NodeScripts.Heartbeat, new { Key = _key, Node = _node, Now = _now(), Expiry = _expiry }).ConfigureAwait(false));
            if (_disposed)
            {
                return;
            }

            // A lower count only once Redis has answered lower for a whole Expiry. The set empties for everyone in an outage
            // longer than Expiry, or a restart that lost it, and the nodes come back one heartbeat at a time: taken at once,
            // the first back would count itself alone, and an outage right after would run on that whole share. Timed from
            // the first lower answer, not the last higher one, which an outage alone would leave long past.
            int count = (int)Math.Clamp(live, _minimum, int.MaxValue);
            long at = _time.GetTimestamp();
            if (at - sent > _heldTimestamps || _reconnected)
            {
                // An answer held long enough that the set could have emptied meanwhile (the client queues commands through a
                // short outage), or one after a reconnect (a restart may have lost the set): as after a failed heartbeat,
                // lower answers before it do not count toward taking a lower count.
                _reconnected = false;
                _lowerSince = NoLowerCount;
            }

            if (count >= _count)
            {
                _lowerSince = NoLowerCount;
                Volatile.Write(ref _count, count);
            }
            else if (_lowerSince == NoLowerCount)
            {
                (_lowerSince, _highestLower) = (at, count);
            }
            else
            {
                // The highest lower answer of the window: a deeper dip at its end (a set lost just then) is not the count.
                _highestLower = Math.Max(_highestLower, count);
                if (at - _lowerSince >= _expiryTimestamps)
                {
                    _lowerSince = NoLowerCount;
                    Volatile.Write(ref _count, _highestLower);
                }
            }

            _counted(Volatile.Read(ref _count));
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            // Redis does not answer: keep the count read last, which the fallback's share is made from. Lower answers before
            // the outage do not count toward taking a lower count after it: the set may come back empty.
            _lowerSince = NoLowerCount;
        }
        finally
        {
            Volatile.Write(ref _beating, 0);
        }
    }
}
