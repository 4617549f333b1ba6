using RateEngine.Redis;

namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// The layered policy the Redis section measures (issue 11: "the same machinery serves layered policies and budgets"):
/// per user, requests per minute (a fixed window), tokens per minute (a counter) and tokens per day (a calendar budget),
/// and a global daily cost cap, every node reconciling into it; in process, on Redis exactly, and on Redis in hybrid mode.
/// </summary>
internal static class PolicyDesigns
{
    public static readonly RedisDesign InProcess = new("in-process policy (per node)", false, false, false, 0, setup =>
        new PolicyLimiter(Layers(new RatePolicyBuilder<string>()).Build()));

    public static readonly RedisDesign Exact = new("exact policy (one script per acquire and per reconcile)", true, true, false, 0, setup => OnRedis(setup, hybrid: false));

    public static readonly RedisDesign Hybrid = new("hybrid policy (local blocks)", true, true, false, 0, setup => OnRedis(setup, hybrid: true));

    public static readonly RedisDesign[] All = [InProcess, Exact, Hybrid];

    /// <summary>Limits no run reaches: the throughput runs measure the cost of deciding, not refusals.</summary>
    private const long Unreached = 1L << 40;

    private static PolicyLimiter OnRedis(RedisDesign.NodeSetup setup, bool hybrid) =>
        new(Layers(new RedisRatePolicyBuilder<string>(new RedisLimiterOptions
        {
            Connection = setup.Connection,
            KeyPrefix = setup.Prefix,
            SyncTimeout = TimeSpan.FromSeconds(2),
            // 10,000 users on 4 nodes send each node a request every few seconds at first: blocks kept through 10 s of
            // idleness let a user's next request find one (with the default second, a cold fleet stays cold: every request
            // reserves, and its blocks go back before the user's next one).
            Hybrid = hybrid ? new RedisHybridOptions { IdleReturn = TimeSpan.FromSeconds(10) } : null,
        })).Build());

    /// <summary>The layers, each per user or global, added to either builder in this order.</summary>
    private static readonly (string Name, bool PerUser, PolicyRule Rule)[] Rules =
    [
        ("user requests/min", true, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), int.MaxValue)),
        ("user tokens/min", true, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, int.MaxValue).Counting(PolicyMeter.Tokens)),
        ("user tokens/day", true, PolicyRule.Calendar(CalendarPeriod.Day, Unreached).Counting(PolicyMeter.Tokens)),
        ("global cost/day", false, PolicyRule.Calendar(CalendarPeriod.Day, Unreached).Counting(PolicyMeter.Money).AsServiceWide()),
    ];

    private static RatePolicyBuilder<string> Layers(RatePolicyBuilder<string> builder)
    {
        foreach ((string name, bool perUser, PolicyRule rule) in Rules)
        {
            builder = perUser ? builder.AddLayer(name, user => user, rule) : builder.AddGlobalLayer(name, rule);
        }

        return builder;
    }

    private static RedisRatePolicyBuilder<string> Layers(RedisRatePolicyBuilder<string> builder)
    {
        foreach ((string name, bool perUser, PolicyRule rule) in Rules)
        {
            builder = perUser ? builder.AddLayer(name, user => user, rule) : builder.AddGlobalLayer(name, rule);
        }

        return builder;
    }
}
