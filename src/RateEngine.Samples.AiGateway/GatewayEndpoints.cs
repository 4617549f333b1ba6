using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Options;
using RateEngine.AspNetCore;
using StackExchange.Redis;

namespace RateEngine.Samples.AiGateway;

/// <summary>The gateway's endpoints: completions (plain or streamed), tool calls, usage, and the operator's pause.</summary>
public static class GatewayEndpoints
{
    /// <summary>The policy's service-wide daily cost cap (see <see cref="GatewayPolicy"/>): its usage is the whole service's spend.</summary>
    private const string GlobalCostLayer = "global cost/day";

    public const string PolicyName = "gateway";

    public static void Map(WebApplication app, bool rateEngine)
    {
        RouteHandlerBuilder chat = app.MapPost("/v1/chat/completions", Complete);
        // Only the tools the gateway has: a made-up name is no endpoint (404), not a key of the per-tool layer (each would
        // take one of a user's sub-key slots), nor a standard tool's limit for an expensive one spelt in capitals.
        RouteHandlerBuilder tools = app.MapPost($"/v1/tools/{{tool:regex(^({string.Join('|', GatewayRequests.Tools)})$)}}", Complete);
        if (rateEngine)
        {
            chat.RequireRateLimiting(PolicyName);
            tools.RequireRateLimiting(PolicyName);
            app.MapGet("/usage", Usage);
            app.MapPost("/admin/pause", Pause);
            app.MapPost("/admin/resume", Resume);
        }
    }

    /// <summary>
    /// Answers from the simulated model. It charges the prompt, then each streamed chunk, and reconciles the actual: a
    /// client that goes away mid-stream pays for the chunks it was sent (RateEngine settles at what was charged).
    /// </summary>
    private static async Task Complete(HttpContext http, CostEstimator<string> estimator, IOptions<GatewayOptions> options, TimeProvider time, ILoggerFactory loggers)
    {
        GatewayUser caller = GatewayRequests.Caller(http);
        ChatBody body = await GatewayRequests.BodyAsync(http);
        string estimatorKey = GatewayRequests.EstimatorKey(caller.Tier, body.Model);
        IRateEngineFeature? rate = http.GetRateEngine();
        int prompt = FakeModel.PromptTokens(body);
        int output = FakeModel.OutputTokens(body);
        var actual = new RequestCost(prompt + output, FakeModel.Prices.MicroDollars(body.Model, prompt, output));

        // Each step priced on the total so far, less what was charged: a chunk priced alone rounds up to a whole micro-dollar,
        // and with sub-micro-dollar token prices the steps would add up past the actual (a reconcile gives back at most the
        // estimate, so the excess would stay counted).
        long charged = FakeModel.Prices.MicroDollars(body.Model, prompt, 0);
        if (rate is not null)
        {
            await ChargeStepAsync(rate, new RequestCost(prompt, charged), loggers);
        }

        if (!body.Stream)
        {
            if (rate is not null)
            {
                await SettleAsync(rate, actual, loggers);
            }

            estimator.Observe(estimatorKey, output);
            await http.Response.WriteAsJsonAsync(new
            {
                model = body.Model,
                tool = GatewayRequests.Tool(http),
                choices = new[] { new { index = 0, message = new { role = "assistant", content = FakeModel.Text(output) } } },
                usage = new { prompt_tokens = prompt, completion_tokens = output, total_tokens = prompt + output },
            });
            return;
        }

        http.Response.ContentType = "text/event-stream";
        await http.Response.Body.FlushAsync(http.RequestAborted); // the client sees the stream open before the first chunk
        const int ChunkTokens = 20;
        var delay = TimeSpan.FromMilliseconds(options.Value.ChunkDelayMilliseconds);
        for (int sent = 0; sent < output; sent += ChunkTokens)
        {
            int chunk = Math.Min(ChunkTokens, output - sent);
            await Task.Delay(delay, time, http.RequestAborted);
            string text = string.Join(' ', Enumerable.Range(sent, chunk).Select(FakeModel.Word));
            if (rate is not null)
            {
                // Charged before it is written: the model produced it, so it counts even if the client is gone by the write.
                long cost = FakeModel.Prices.MicroDollars(body.Model, prompt, sent + chunk) - charged;
                charged += cost;
                await ChargeStepAsync(rate, new RequestCost(chunk, cost), loggers);
            }

            await http.Response.WriteAsync($"data: {JsonSerializer.Serialize(new { delta = text })}\n\n", http.RequestAborted);
            await http.Response.Body.FlushAsync(http.RequestAborted);
        }

        if (rate is not null)
        {
            await SettleAsync(rate, actual, loggers);
        }

        estimator.Observe(estimatorKey, output);
        await http.Response.WriteAsync($"data: {JsonSerializer.Serialize(new { usage = new { prompt_tokens = prompt, completion_tokens = output } })}\n\ndata: [DONE]\n\n");
    }

    /// <summary>
    /// Settles the request at its actual cost. The model has answered by now: a rate-limit store that fails meanwhile (a
    /// policy on Redis) does not turn the answer into an error, and the lease keeps what it could not settle (stricter).
    /// </summary>
    private static async Task SettleAsync(IRateEngineFeature rate, RequestCost actual, ILoggerFactory loggers)
    {
        try
        {
            await rate.ReconcileAsync(actual, CancellationToken.None);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            loggers.CreateLogger(typeof(GatewayEndpoints)).LogWarning(error, "The rate limit store did not take the request's settlement.");
        }
    }

    /// <summary>
    /// Charges the prompt or one streamed chunk. A rate-limit store that fails meanwhile (a policy on Redis, failing closed)
    /// does not cut the answer the client is waiting for: the lease keeps what it could not count and sends it again with
    /// its next settle.
    /// </summary>
    private static async Task ChargeStepAsync(IRateEngineFeature rate, RequestCost step, ILoggerFactory loggers)
    {
        try
        {
            await rate.ChargeAsync(step, CancellationToken.None);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            loggers.CreateLogger(typeof(GatewayEndpoints)).LogWarning(error, "The rate limit store did not take a streamed chunk's charge.");
        }
    }

    /// <summary>The caller's usage and what is left, per layer (<c>?tool=</c> picks the tool layer's key; default chat).</summary>
    private static async Task<IResult> Usage(HttpContext http, RateEnginePolicies<ChatRequest> policies, string? tool, string? model)
    {
        GatewayUser caller = GatewayRequests.Caller(http);
        var request = new ChatRequest(GatewayRequests.ClientIp(http), caller.User, caller.Team, caller.Tier, tool ?? "chat", model ?? "small", 0);
        return Results.Ok(new
        {
            user = caller.User,
            team = caller.Team,
            tier = caller.Tier,
            paused = policies[PolicyName].IsPaused,
            // Not the service-wide cap: its usage is every customer's spend together (on a quiet service, each other request's).
            layers = (await policies[PolicyName].GetUsageAsync(request, http.RequestAborted)).Where(usage => usage.Layer != GlobalCostLayer).Select(usage => new
            {
                layer = usage.Layer,
                limit = usage.Limit,
                used = usage.Used,
                remaining = usage.Remaining,
                resetSeconds = (long)Math.Ceiling(usage.ResetAfter.TotalSeconds),
            }),
        });
    }

    // Awaited: on Redis the switch is a write, which must not block a request thread. Not cancelled with the request: an
    // operator whose connection drops must not leave the fleet paused while this node reads itself as running.
    private static async Task<IResult> Pause(HttpContext http, RateEnginePolicies<ChatRequest> policies, IOptions<GatewayOptions> options, string? reason)
    {
        RefuseUnlessAdmin(http, options.Value);

        await policies[PolicyName].PauseAsync(string.IsNullOrWhiteSpace(reason) ? "the service is paused by its operator" : reason);
        return Results.Ok(new { paused = true });
    }

    private static async Task<IResult> Resume(HttpContext http, RateEnginePolicies<ChatRequest> policies, IOptions<GatewayOptions> options)
    {
        RefuseUnlessAdmin(http, options.Value);

        await policies[PolicyName].ResumeAsync();
        return Results.Ok(new { paused = false });
    }

    /// <summary>
    /// Throws 401 unless the request carries the operator's key, and 429 once its address has made too many admin calls
    /// (<see cref="UnknownKeyGuard.AdminAttempt"/>), since one right guess pauses the service.
    /// </summary>
    private static void RefuseUnlessAdmin(HttpContext http, GatewayOptions options)
    {
        // Counted before the key is compared, right or wrong: an address past its budget is refused even with the right
        // key, or the cap would only change the status of wrong guesses, not their number.
        BadHttpRequestException attempt = http.RequestServices.GetRequiredService<UnknownKeyGuard>().AdminAttempt(http);
        if (attempt.StatusCode == StatusCodes.Status429TooManyRequests || !IsAdmin(http, options))
        {
            throw attempt;
        }
    }

    /// <summary>
    /// The operator's key, compared in constant time over hashes of equal length (a comparison that stops at the first
    /// difference tells a guesser how far it got; one of byte strings of different lengths tells it the key's length).
    /// </summary>
    private static bool IsAdmin(HttpContext http, GatewayOptions options) =>
        options.AdminKey.Length > 0
        && CryptographicOperations.FixedTimeEquals(
            SHA256.HashData(Encoding.UTF8.GetBytes(http.Request.Headers["X-Admin-Key"].ToString())), SHA256.HashData(Encoding.UTF8.GetBytes(options.AdminKey)));
}
