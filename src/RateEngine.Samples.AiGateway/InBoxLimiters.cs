using System.Threading.RateLimiting;
using Microsoft.Extensions.Options;

namespace RateEngine.Samples.AiGateway;

/// <summary>
/// The bench's comparison: what the in-box middleware can express of the gateway's policy, as chained in-box partitioned
/// limiters (per IP, per user, per (user, tool), streams per user, per team). It has no token or cost budgets, no
/// reservation and no reconcile: those need the request's cost, which in-box limiters cannot weigh.
/// </summary>
public static class InBoxLimiters
{
    public static PartitionedRateLimiter<HttpContext> Create() => PartitionedRateLimiter.CreateChained(
        Partitioned(http => GatewayRequests.ClientIp(http), key => RateLimitPartition.GetSlidingWindowLimiter(key, _ => Sliding(100))),
        Partitioned(http => User(http)?.User, key => RateLimitPartition.GetSlidingWindowLimiter(key, _ => Sliding(20))),
        Partitioned(http => User(http) is { } user ? $"{user.User}|{GatewayRequests.Tool(http)}" : null, key => RateLimitPartition.GetFixedWindowLimiter(key, _ =>
            new FixedWindowRateLimiterOptions { PermitLimit = 60, Window = TimeSpan.FromMinutes(1), QueueLimit = 0 })),
        Partitioned(http => User(http)?.User, key => RateLimitPartition.GetConcurrencyLimiter(key, _ =>
            new ConcurrencyLimiterOptions { PermitLimit = 32, QueueLimit = 0 })),
        Partitioned(http => User(http)?.Team, key => RateLimitPartition.GetFixedWindowLimiter(key, _ =>
            new FixedWindowRateLimiterOptions { PermitLimit = 1_000_000, Window = TimeSpan.FromDays(1), QueueLimit = 0 })));

    private static SlidingWindowRateLimiterOptions Sliding(int limit) =>
        new() { PermitLimit = limit, Window = TimeSpan.FromMinutes(1), SegmentsPerWindow = 6, QueueLimit = 0 };

    private static GatewayUser? User(HttpContext http) =>
        http.RequestServices.GetRequiredService<IOptions<GatewayOptions>>().Value.Find(RateEngine.AspNetCore.HttpPartitionKeys.ApiKey(http, "Authorization"));

    // A request without a known key is not limited here: the endpoint answers it 401.
    private static PartitionedRateLimiter<HttpContext> Partitioned(Func<HttpContext, string?> key, Func<string, RateLimitPartition<string>> partition) =>
        PartitionedRateLimiter.Create<HttpContext, string>(http => key(http) is { } k ? partition(k) : RateLimitPartition.GetNoLimiter(string.Empty));
}
