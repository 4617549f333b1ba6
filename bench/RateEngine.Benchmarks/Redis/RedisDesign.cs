using System.Threading.RateLimiting;
using RateEngine.Redis;
using StackExchange.Redis;

namespace RateEngine.Benchmarks.Redis;

/// <summary>A design the Redis mode measures: one limiter per node, made for a run's limit and window.</summary>
internal sealed record RedisDesign(string Name, bool UsesRedis, bool Scripted, bool SlidingLog, int QueuedPerTransaction, Func<RedisDesign.NodeSetup, PartitionedRateLimiter<string>> Create)
{
    /// <summary>What one node's limiter is made from. <see cref="Clock"/> is set in saturation runs (decisions stamped), null for throughput.</summary>
    internal sealed record NodeSetup(IConnectionMultiplexer? Connection, string Prefix, int Node, int Limit, TimeSpan Window, StampClock? Clock);

    /// <summary>RateEngine's in-process partitioned fixed window, one per node (no Redis): the latency yardstick of issue 11.</summary>
    public static readonly RedisDesign InProcess = new("in-process (RateEngine, per node)", false, false, false, 0, setup =>
    {
        var options = new FixedWindowRateLimiterOptions { PermitLimit = setup.Limit, Window = setup.Window };
        return PartitionedLimiter.CreateFixedWindow<string, string>(key => key, _ => options);
    });

    public static readonly RedisDesign Exact = new("exact (one script per acquire)", true, true, false, 0, setup => RedisFixedWindow(setup, hybrid: false));

    public static readonly RedisDesign Hybrid = new("hybrid (local blocks)", true, true, false, 0, setup => RedisFixedWindow(setup, hybrid: true));

    public static readonly RedisDesign CheckThenAdd = new("seed: check-then-add (ZCOUNT, ZADD)", true, false, true, 0, setup =>
        new CheckThenAddLimiter(setup.Connection!.GetDatabase(), setup.Prefix + ":", setup.Limit, setup.Window, setup.Clock ?? new StampClock(), setup.Node));

    public static readonly RedisDesign MultiPerCall = new("seed: MULTI per call (every attempt logged)", true, false, true, MultiPerCallLimiter.QueuedPerTransaction, setup =>
        new MultiPerCallLimiter(setup.Connection!.GetDatabase(), setup.Prefix + ":", setup.Limit, setup.Window, setup.Clock ?? new StampClock(), setup.Node));

    /// <summary>The four designs issue 11 compares, in its order.</summary>
    public static readonly RedisDesign[] Compared = [Exact, Hybrid, CheckThenAdd, MultiPerCall];

    private static PartitionedRateLimiter<string> RedisFixedWindow(NodeSetup setup, bool hybrid)
    {
        // One options instance, as an application holds its configuration; the decision's clock is the stamp clock in
        // saturation runs (so each admission's window is known) and the server's TIME otherwise.
        var options = new FixedWindowRateLimiterOptions { PermitLimit = setup.Limit, Window = setup.Window };
        return RedisLimiter.CreateFixedWindow<string>(key => key, _ => options, new RedisLimiterOptions
        {
            Connection = setup.Connection,
            KeyPrefix = setup.Prefix,
            ClientClock = setup.Clock,
            TimeProvider = setup.Clock ?? TimeProvider.System,
            SyncTimeout = TimeSpan.FromSeconds(2),
            Hybrid = hybrid ? new RedisHybridOptions() : null,
        });
    }
}
