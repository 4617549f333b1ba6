using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Policies;

/// <summary>A gateway request as both sides see it: the keys of the five layers.</summary>
internal sealed record BenchRequest(string Ip, string User, string Tool);

/// <summary>
/// The five-layer policy of issue 10 (ip, user, tool, tokens per minute, daily cents) as a RateEngine policy and as five
/// in-box partitioned limiters chained with <see cref="PartitionedRateLimiter.CreateChained{TResource}"/>, with the same
/// windows and limits high enough that no measured run is ever refused.
/// </summary>
internal static class PolicySubjects
{
    public const int Users = 10_000;

    /// <summary>Few enough users that every layer's state of both sides stays in the cache: what each costs in compute alone.</summary>
    public const int CachedUsers = 100;

    /// <summary>The estimate each request reserves on the RateEngine side: tokens and micro-dollars.</summary>
    public static readonly RequestCost Estimate = new(500, 2_500);

    private static readonly string[] Tools = ["search", "chat", "code_interpreter", "web_browse", "image", "files", "sql", "email"];

    /// <summary>Requests of <paramref name="userCount"/> users (each with its own IP) and 8 tools, in a seeded random order.</summary>
    public static BenchRequest[] Requests(int count = 1 << 16, int userCount = Users)
    {
        var random = new Random(20261202);
        var users = Enumerable.Range(0, userCount)
            .Select(u => (Ip: $"10.{u >> 16 & 255}.{u >> 8 & 255}.{u & 255}", User: $"user-{u:D5}"))
            .ToArray();
        return [.. Enumerable.Range(0, count).Select(_ =>
        {
            var (ip, user) = users[random.Next(users.Length)];
            return new BenchRequest(ip, user, Tools[random.Next(Tools.Length)]);
        })];
    }

    /// <summary>
    /// One selector for the per-user layers, so they share one key table (one lookup per request); the (user, tool) layer
    /// nests its tools under the user's entry.
    /// </summary>
    private static readonly Func<BenchRequest, string> ByUser = r => r.User;

    public static RatePolicy<BenchRequest> RateEngine() => new RatePolicyBuilder<BenchRequest>()
        .AddLayer("ip", r => r.Ip, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), int.MaxValue))
        .AddLayer("user", ByUser, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, int.MaxValue))
        .AddNestedLayer("tool", ByUser, r => r.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), int.MaxValue))
        .AddLayer("tokens/min", ByUser, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, int.MaxValue).Counting(PolicyMeter.Tokens))
        .AddLayer("cents/day", ByUser, PolicyRule.Calendar(CalendarPeriod.Day, long.MaxValue / 4).Counting(PolicyMeter.Money))
        .Build();

    public static PartitionedRateLimiter<BenchRequest> InBoxChain() => PartitionedRateLimiter.CreateChained(
        PartitionedRateLimiter.Create<BenchRequest, string>(r => RateLimitPartition.GetFixedWindowLimiter(r.Ip, _ => Fixed(TimeSpan.FromMinutes(1)))),
        PartitionedRateLimiter.Create<BenchRequest, string>(r => RateLimitPartition.GetSlidingWindowLimiter(r.User, _ => Sliding())),
        PartitionedRateLimiter.Create<BenchRequest, (string, string)>(r => RateLimitPartition.GetFixedWindowLimiter((r.User, r.Tool), _ => Fixed(TimeSpan.FromMinutes(1)))),
        PartitionedRateLimiter.Create<BenchRequest, string>(r => RateLimitPartition.GetSlidingWindowLimiter(r.User, _ => Sliding())),
        PartitionedRateLimiter.Create<BenchRequest, string>(r => RateLimitPartition.GetFixedWindowLimiter(r.User, _ => Fixed(TimeSpan.FromDays(1)))));

    private static FixedWindowRateLimiterOptions Fixed(TimeSpan window) => new() { PermitLimit = int.MaxValue, Window = window, QueueLimit = 0 };

    private static SlidingWindowRateLimiterOptions Sliding() =>
        new() { PermitLimit = int.MaxValue, Window = TimeSpan.FromMinutes(1), SegmentsPerWindow = 6, QueueLimit = 0 };
}
