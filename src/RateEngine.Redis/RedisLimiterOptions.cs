using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace RateEngine.Redis;

/// <summary>Where and how a Redis limiter keeps its state. Validated when the limiter is created.</summary>
public sealed class RedisLimiterOptions
{
    /// <summary>The application's one shared connection. Required.</summary>
    public IConnectionMultiplexer? Connection { get; set; }

    /// <summary>The database number; default -1 (the connection's default).</summary>
    public int Database { get; set; } = -1;

    /// <summary>
    /// The prefix of every key this limiter writes: <c>{prefix}:{{partition key}}:{algorithm}</c>, where the braces make the
    /// partition key a hash tag, so all of a partition's keys land in one cluster slot (a layered policy's keys share the
    /// prefix as their tag, so it holds no braces). Give each limiter its own prefix. Default <c>"rateengine"</c>.
    /// </summary>
    public string KeyPrefix { get; set; } = "rateengine";

    /// <summary>
    /// Null (the default): every decision uses the Redis server's clock (<c>TIME</c>), one clock for every node. Set it for
    /// hosts that forbid <c>TIME</c> in scripts: decisions then use this provider's UTC time in microseconds, and the
    /// guarantees hold across nodes only as far as their clocks agree: keep them within a second of each other (a key's TTL
    /// has a second of margin, and a key's time does not go back, so a node far ahead makes the others wait for it; past a
    /// second of disagreement a key can expire, or a refund take its time back, before a node behind is done with it).
    /// </summary>
    public TimeProvider? ClientClock { get; set; }

    /// <summary>
    /// The longest a synchronous <c>AttemptAcquire</c> blocks its thread on the network; past it the attempt fails (or, with
    /// <see cref="RedisFailureMode.FailOpen"/>, succeeds) with a reason. <c>AcquireAsync</c> is the native path and waits
    /// for Redis as long as the connection's own timeouts allow. Default 100 ms.
    /// </summary>
    public TimeSpan SyncTimeout { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>What a limiter answers while Redis does not. Default <see cref="RedisFailureMode.FailClosed"/>.</summary>
    public RedisFailureMode FailureMode { get; set; } = RedisFailureMode.FailClosed;

    /// <summary>
    /// With <see cref="RedisFailureMode.LocalFallback"/>: the share of each key's limit this node enforces alone while Redis
    /// does not answer (1/N for N nodes; every limit rounds down, to at least 1: with more nodes than a key's limit, the
    /// fleet admits up to one per node and window during an outage, so such keys belong in a limiter that fails closed).
    /// In (0, 1]; default 0, unset. That mode needs either this or <see cref="LocalFallbackLiveNodes"/>, not both.
    /// </summary>
    public double LocalFallbackShare { get; set; }

    /// <summary>
    /// With <see cref="RedisFailureMode.LocalFallback"/>: derive the share from the live node count (1/N) instead of
    /// <see cref="LocalFallbackShare"/>; each limiter registers itself in Redis with a heartbeat. Default null (the share is
    /// configured). Only for that mode, and not together with <see cref="LocalFallbackShare"/>.
    /// </summary>
    public RedisLiveNodeOptions? LocalFallbackLiveNodes { get; set; }

    /// <summary>
    /// After a failed call, how long the limiter answers by <see cref="FailureMode"/> without calling Redis, so a dead
    /// server is not hammered; after it one request's call is let through to try Redis again (other requests keep the failure
    /// mode's answer for another cool-down while it runs), and its success ends the outage. Default 1 second.
    /// </summary>
    public TimeSpan FailureCooldown { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Null (the default): exact mode, one script call per acquire. Set it for the hybrid mode (fixed window and counter):
    /// acquires served from local blocks reserved from Redis.
    /// </summary>
    public RedisHybridOptions? Hybrid { get; set; }

    /// <summary>
    /// The node's own clock: the cool-down, and in the hybrid mode how long a local block may be used (not decisions,
    /// which use the server's clock or <see cref="ClientClock"/>); default <see cref="TimeProvider.System"/>.
    /// </summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Where the degraded state is logged (once when Redis stops answering, once when it answers again); default none.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>
    /// Creates the <c>RateEngine</c> meter (round trips, failures, degraded limiters, tagged by key prefix and mode);
    /// default a shared meter of that name.
    /// </summary>
    public IMeterFactory? MeterFactory { get; set; }

    /// <summary>The longest <see cref="SyncTimeout"/>: what a thread's wait takes (about 24.8 days).</summary>
    internal static readonly TimeSpan MaxSyncTimeout = TimeSpan.FromMilliseconds(int.MaxValue);

    /// <summary>The longest <see cref="FailureCooldown"/>: a day (the breaker adds it to a timestamp).</summary>
    internal static readonly TimeSpan MaxFailureCooldown = TimeSpan.FromDays(1);

    /// <summary>The longest period of a timer these options start (about 49.7 days, what a timer takes).</summary>
    internal static readonly TimeSpan MaxTimerPeriod = TimeSpan.FromMilliseconds(uint.MaxValue - 1L);

    /// <summary>
    /// A copy that the limiter or policy keeps, nested options included: the caller's object may be changed or reused for
    /// another limiter afterwards (as the in-box limiters copy theirs).
    /// </summary>
    internal RedisLimiterOptions Snapshot()
    {
        var copy = (RedisLimiterOptions)MemberwiseClone();
        copy.Hybrid = Hybrid?.Snapshot();
        copy.LocalFallbackLiveNodes = LocalFallbackLiveNodes?.Snapshot();
        return copy;
    }

    internal void Validate()
    {
        if (Connection is null)
        {
            throw new ArgumentException("RedisLimiterOptions.Connection is required: pass the application's shared IConnectionMultiplexer.", nameof(Connection));
        }

        ArgumentException.ThrowIfNullOrWhiteSpace(KeyPrefix, nameof(KeyPrefix));
        if (KeyPrefix.AsSpan().IndexOfAny('{', '}') >= 0)
        {
            // The prefix goes inside the keys' hash tag: a brace in it would end the tag early (or make it empty, and Redis
            // would hash whole keys), and on a cluster one partition's or one policy's keys would land in different slots.
            throw new ArgumentException($"RedisLimiterOptions.KeyPrefix '{KeyPrefix}' contains '{{' or '}}': it is put inside the keys' hash tag.", nameof(KeyPrefix));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(Database, -1, nameof(Database));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(SyncTimeout, TimeSpan.Zero, nameof(SyncTimeout));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(SyncTimeout, MaxSyncTimeout, nameof(SyncTimeout));
        ArgumentOutOfRangeException.ThrowIfLessThan(FailureCooldown, TimeSpan.Zero, nameof(FailureCooldown));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(FailureCooldown, MaxFailureCooldown, nameof(FailureCooldown));
        ArgumentNullException.ThrowIfNull(TimeProvider, nameof(TimeProvider));
        Hybrid?.Validate();
        if (LocalFallbackLiveNodes is { } live)
        {
            if (FailureMode != RedisFailureMode.LocalFallback)
            {
                throw new ArgumentException("LocalFallbackLiveNodes derives the LocalFallback share: set FailureMode = LocalFallback, or leave it null.", nameof(LocalFallbackLiveNodes));
            }

            if (LocalFallbackShare != 0)
            {
                throw new ArgumentException("Set LocalFallbackShare or LocalFallbackLiveNodes, not both: the share is either configured or derived from the live node count.", nameof(LocalFallbackShare));
            }

            live.Validate();
        }
        else if (FailureMode == RedisFailureMode.LocalFallback && !(LocalFallbackShare > 0 && LocalFallbackShare <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(LocalFallbackShare), LocalFallbackShare, "LocalFallback needs LocalFallbackShare in (0, 1] (the share of each limit one node enforces alone, 1/N for N nodes) or LocalFallbackLiveNodes to derive it.");
        }
    }
}
