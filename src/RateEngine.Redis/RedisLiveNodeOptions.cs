namespace RateEngine.Redis;

/// <summary>
/// <see cref="RedisFailureMode.LocalFallback"/> with each node's share derived from the live node count instead of a
/// configured <see cref="RedisLimiterOptions.LocalFallbackShare"/>: while Redis answers, each limiter (a node) registers
/// itself under <c>{KeyPrefix}:nodes</c> with a heartbeat and reads how many nodes are live; while Redis does not, it
/// enforces 1/N of each key's limit for the last N it read (rounded down, at least 1 permit).
/// </summary>
/// <remarks>
/// <para>A node counts until <see cref="Expiry"/> after its last heartbeat, on the decisions' clock (the server's
/// <c>TIME</c>, or <see cref="RedisLimiterOptions.ClientClock"/>); a limiter disposed leaves at once. Heartbeats run on
/// <see cref="RedisLimiterOptions.TimeProvider"/>, one script call per <see cref="HeartbeatInterval"/> per limiter.</para>
/// <para>The count is what the node read last before the outage began: a node that joined later, or one that died within
/// the expiry, makes it stale by that much. The share changes only while Redis answers, so an outage is enforced with one
/// share from its start (a fresh local count when the share changed since the last outage).</para>
/// </remarks>
public sealed class RedisLiveNodeOptions
{
    /// <summary>How often a node renews its registration and reads the live count. Default 1 second.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long a node counts after its last heartbeat: longer than <see cref="HeartbeatInterval"/>, with room for a
    /// late heartbeat or two (a node briefly uncounted makes every other's share larger). Default 5 seconds. A
    /// registration is dropped a second after this, a margin for nodes' client clocks that disagree.
    /// </summary>
    public TimeSpan Expiry { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The fewest nodes assumed: the count used before the first heartbeat answers (Redis down at start), and a floor
    /// under every count read. Default 1.
    /// </summary>
    public int MinimumNodeCount { get; set; } = 1;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(HeartbeatInterval, TimeSpan.Zero, nameof(HeartbeatInterval));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(HeartbeatInterval, RedisLimiterOptions.MaxTimerPeriod, nameof(HeartbeatInterval));
        if (Expiry <= HeartbeatInterval)
        {
            throw new ArgumentOutOfRangeException(nameof(Expiry), Expiry, "Expiry must be longer than HeartbeatInterval, or a live node would drop out between two heartbeats.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(MinimumNodeCount, 1, nameof(MinimumNodeCount));
    }

    internal RedisLiveNodeOptions Snapshot() => (RedisLiveNodeOptions)MemberwiseClone();
}
