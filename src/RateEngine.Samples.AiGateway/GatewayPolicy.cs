namespace RateEngine.Samples.AiGateway;

// The README's policy, verbatim between the markers: ReadmeExampleTests checks that the README shows exactly this code,
// and runs it.
// README:begin
public sealed record ChatRequest(string ClientIp, string UserId, string TeamId, string Tier, string Tool, string Model, int MaxTokens);

public static class GatewayPolicy
{
    public const long MicroDollarsPerCent = 10_000;

    private static readonly HashSet<string> ExpensiveTools = ["code_interpreter", "web_browse"];

    // One selector for every per-user layer: layers given the same selector share one key table, one lookup per request
    // (the per-tool layer keeps each user's tools in the user's entry).
    private static readonly Func<ChatRequest, string> ByUser = request => request.UserId;

    // Limits by tier: tiers can be replaced at run time (policy.UpdateTiers) and keep the usage already counted.
    public static PolicyTiers Tiers() => new()
    {
        ["free"] = { ["user tokens/min"] = 10_000, ["user tokens/hour"] = 100_000, ["user tokens/day"] = 300_000,
                     ["user streams"] = 1, ["user cost/day"] = 10 * MicroDollarsPerCent, ["user cost alerts"] = 10 * MicroDollarsPerCent },
        ["pro"] = { ["user tokens/min"] = 100_000, ["user tokens/hour"] = 2_000_000, ["user tokens/day"] = 10_000_000,
                    ["user streams"] = 4, ["user cost/day"] = 200 * MicroDollarsPerCent, ["user cost alerts"] = 200 * MicroDollarsPerCent },
        ["team"] = { ["user tokens/min"] = 200_000, ["user tokens/hour"] = 5_000_000, ["user tokens/day"] = 40_000_000,
                     ["user streams"] = 8, ["user cost/day"] = 2_000 * MicroDollarsPerCent, ["user cost alerts"] = 2_000 * MicroDollarsPerCent },
        ["enterprise"] = { ["user tokens/min"] = 1_000_000, ["user tokens/hour"] = 20_000_000, ["user tokens/day"] = 200_000_000,
                           ["user streams"] = 32, ["user cost/day"] = 20_000 * MicroDollarsPerCent, ["user cost alerts"] = 20_000 * MicroDollarsPerCent },
        ["standard tool"] = { ["tool calls/min"] = 60 },
        ["expensive tool"] = { ["tool calls/min"] = 5 },
        ["service"] = { ["global cost/day"] = 50_000 * 100 * MicroDollarsPerCent }, // $50,000 a day for the whole service
    };

    public static string ToolTier(ChatRequest request) => ExpensiveTools.Contains(request.Tool) ? "expensive tool" : "standard tool";

    public static RatePolicy<ChatRequest> Create(TimeProvider time, Action<ThresholdCrossing> onThreshold) =>
        new RatePolicyBuilder<ChatRequest>()
            .UseTimeProvider(time)
            .UseTiers(request => request.Tier, Tiers())
            .AddLayer("ip", request => request.ClientIp, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, limit: 100))
            .AddLayer("user", ByUser, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), limit: 20))
            .AddNestedLayer("tool calls/min", ByUser, request => request.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)), tierSelector: ToolTier)
            .AddLayer("user streams", ByUser, PolicyRule.Concurrency())
            .AddLayer("user tokens/min", ByUser,
                PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6).Counting(PolicyMeter.Tokens))
            .AddLayer("user tokens/hour", ByUser, PolicyRule.FixedWindow(TimeSpan.FromHours(1)).Counting(PolicyMeter.Tokens))
            .AddLayer("user tokens/day", ByUser, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Tokens))
            .AddLayer("user cost/day", ByUser,
                PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money).WithReason("daily cost cap reached"))
            .AddLayer("user cost alerts", ByUser,
                PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money).AsSoft(0.5, 0.8, 1.0))
            .AddLayer("team cost/day", request => request.TeamId,
                PolicyRule.Calendar(CalendarPeriod.Day, limit: 5_000 * MicroDollarsPerCent).Counting(PolicyMeter.Money)
                    .WithReason("the team's daily budget is spent"))
            .AddGlobalLayer("global cost/day",
                PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money)
                    .AsServiceWide().WithReason("the service's daily cost cap is reached"), tierSelector: _ => "service")
            .OnThresholdCrossed(onThreshold)
            .Build();

    // One request: reserve an estimate, stream, reconcile the actual. Returns the HTTP status the gateway answers.
    public static int Handle(RatePolicy<ChatRequest> policy, PriceTable prices, CostEstimator<string> estimator,
        ChatRequest request, int promptTokens, int outputTokens)
    {
        string selector = $"{request.Tier}/{request.Model}"; // per tier: one tier's callers cannot train another's estimates down
        long expectedOutput = estimator.Estimate(selector, request.MaxTokens);
        var estimate = new RequestCost(promptTokens + expectedOutput, prices.MicroDollars(request.Model, promptTokens, expectedOutput));
        using PolicyLease lease = policy.Acquire(request, estimate);
        if (!lease.IsAcquired)
        {
            return lease.IsServiceWide ? 503 : 429; // lease.Reason, lease.BlockingLayer and lease.RetryAfter say why and when
        }

        long charged = prices.MicroDollars(request.Model, promptTokens, 0);
        lease.Charge(new RequestCost(promptTokens, charged));
        for (int produced = 0; produced < outputTokens; produced += 100) // stream the answer, charging each chunk
        {
            int chunk = Math.Min(100, outputTokens - produced);
            long cost = prices.MicroDollars(request.Model, promptTokens, produced + chunk) - charged; // priced on the total: no rounding adds up
            charged += cost;
            lease.Charge(new RequestCost(chunk, cost));
        }

        lease.Reconcile(new RequestCost(promptTokens + outputTokens, prices.MicroDollars(request.Model, promptTokens, outputTokens)));
        estimator.Observe(selector, outputTokens);
        return 200;
    }
}
// README:end
