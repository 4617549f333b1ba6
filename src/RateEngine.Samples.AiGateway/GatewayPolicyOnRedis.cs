using RateEngine.Redis;
using StackExchange.Redis;

namespace RateEngine.Samples.AiGateway;

/// <summary>
/// The README's policy kept on Redis (<c>--redis host:port</c>) in hybrid mode: the same layers, limits and tiers, held for
/// every gateway instance at once. The window, counter and calendar layers (IP, tool calls, tokens per minute, hour and
/// day, the user's, team's and service's daily cost) are served from blocks each instance reserves on Redis; the user's
/// sliding log and the stream slots are decided by one script call per request, which also reads the pause switch.
/// </summary>
/// <remarks>
/// Two differences from the in-process policy: the per-tool layer is keyed by (user, tool) directly, and the soft
/// "user cost alerts" layer is left out, since a threshold event is raised by the node that crosses it and a fleet
/// needs those from one place (alert on the daily cost layer's usage instead).
/// </remarks>
public static class GatewayPolicyOnRedis
{
    public static RedisRatePolicy<ChatRequest> Create(IConnectionMultiplexer redis, ILoggerFactory logs) =>
        new RedisRatePolicyBuilder<ChatRequest>(new RedisLimiterOptions
            {
                Connection = redis,
                KeyPrefix = "gateway",
                SyncTimeout = TimeSpan.FromSeconds(1),
                FailureMode = RedisFailureMode.FailClosed,
                LoggerFactory = logs,
                Hybrid = new RedisHybridOptions(),
            })
            .UseTiers(request => request.Tier, GatewayPolicy.Tiers())
            .AddLayer("ip", request => request.ClientIp, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, limit: 100))
            .AddLayer("user", request => request.UserId, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), limit: 20))
            .AddLayer("tool calls/min", request => $"{request.UserId}/{request.Tool}", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)), GatewayPolicy.ToolTier)
            .AddLayer("user streams", request => request.UserId, PolicyRule.Concurrency())
            .AddLayer("user tokens/min", request => request.UserId, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6).Counting(PolicyMeter.Tokens))
            .AddLayer("user tokens/hour", request => request.UserId, PolicyRule.FixedWindow(TimeSpan.FromHours(1)).Counting(PolicyMeter.Tokens))
            .AddLayer("user tokens/day", request => request.UserId, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Tokens))
            .AddLayer("user cost/day", request => request.UserId,
                PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money).WithReason("daily cost cap reached"))
            .AddLayer("team cost/day", request => request.TeamId,
                PolicyRule.Calendar(CalendarPeriod.Day, limit: 5_000 * GatewayPolicy.MicroDollarsPerCent).Counting(PolicyMeter.Money)
                    .WithReason("the team's daily budget is spent"))
            .AddGlobalLayer("global cost/day",
                PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money)
                    .AsServiceWide().WithReason("the service's daily cost cap is reached"), tierSelector: _ => "service")
            .Build();
}
