using System.Net;
using System.Net.Http.Json;
using System.Threading.RateLimiting;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Time.Testing;
using RateEngine.AspNetCore.Tests.Support;
using static RateEngine.AspNetCore.Tests.Support.Policies;

namespace RateEngine.AspNetCore.Tests;

/// <summary>RateEngine behind the in-box middleware, on a real Kestrel server, driven over HTTP.</summary>
public sealed class RateEngineMiddlewareTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 9, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task Refusal_PerCallerLayer_Answers429WithRetryAfterRateLimitFieldsAndProblem()
    {
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 2)));

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/chat", "alice"));

        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal(TimeSpan.FromMinutes(1), refused.Headers.RetryAfter?.Delta);
        var policies = StructuredFieldList.Parse(Header(refused, "RateLimit-Policy"));
        var current = StructuredFieldList.Parse(Header(refused, "RateLimit"));
        Assert.Equal("user", policies[0].Value); // the refusing layer first
        Assert.Equal(2, policies[0].Integer("q"));
        Assert.Equal(60, policies[0].Integer("w"));
        Assert.Equal("user", current[0].Value);
        Assert.Equal(0, current[0].Integer("r"));
        Assert.Equal(60, current[0].Integer("t"));
        Assert.Single(policies); // the token budget has no registered quota unit: it is not in the IETF fields

        Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        using JsonDocument problem = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        Assert.Equal(429, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Equal("Too Many Requests", problem.RootElement.GetProperty("title").GetString());
        Assert.Equal("request rate limit reached (user)", problem.RootElement.GetProperty("detail").GetString());
        Assert.Equal("chat", problem.RootElement.GetProperty("policy").GetString());
        Assert.Equal("user", problem.RootElement.GetProperty("layer").GetString());
        Assert.Equal(2, problem.RootElement.GetProperty("limit").GetInt64());
        Assert.Equal(0, problem.RootElement.GetProperty("remaining").GetInt64());
        Assert.Equal(60, problem.RootElement.GetProperty("retryAfter").GetInt64());

        // Another caller is not affected.
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "bob"))).StatusCode);
    }

    [Fact]
    public async Task Refusal_OfACostAboveACap_Answers429WithoutRetryAfter_AndSaysItIsNotRetryable()
    {
        // No wait makes this request pass: a Retry-After would send the client back to be refused again.
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 100, tokensPerDay: 1_000)).UseEstimate(EstimateHeader));

        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/chat", "alice", estimate: 1_001));

        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Null(refused.Headers.RetryAfter);
        using JsonDocument problem = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        Assert.Equal("user tokens/day", problem.RootElement.GetProperty("layer").GetString());
        Assert.False(problem.RootElement.GetProperty("retryable").GetBoolean());
        Assert.False(problem.RootElement.TryGetProperty("retryAfter", out _));
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice", estimate: 1_000))).StatusCode);
    }

    [Fact]
    public async Task Refusal_ServiceWideLayer_Answers503WithRetryAfterUntilMidnight()
    {
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => ServiceWide(_time, tokensPerDay: 100)).UseEstimate(EstimateHeader));

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice", estimate: 100))).StatusCode);
        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/chat", "bob", estimate: 1));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal(TimeSpan.FromHours(15), refused.Headers.RetryAfter?.Delta); // 09:00 to midnight UTC
        using JsonDocument problem = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        Assert.Equal(503, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Equal("the service's daily token cap is reached", problem.RootElement.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task Pause_Answers503WithTheConfiguredRetryAfter_AndResumeAdmits()
    {
        await using RunningApp app = await StartAsync(
            engine => engine.AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 100)),
            new Dictionary<string, string?> { ["RateEngine:UnknownRetryAfterSeconds"] = "30" });
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];

        policy.Pause("maintenance until 10:00");
        using HttpResponseMessage paused = await app.Client.SendAsync(Request("/chat", "alice"));
        policy.Resume();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, paused.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(30), paused.Headers.RetryAfter?.Delta);
        using JsonDocument problem = JsonDocument.Parse(await paused.Content.ReadAsStringAsync());
        Assert.Equal("maintenance until 10:00", problem.RootElement.GetProperty("detail").GetString());
        Assert.Equal("pause", problem.RootElement.GetProperty("layer").GetString());
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
    }

    [Fact]
    public async Task GlobalAndEndpointPolicies_EndpointRefuses_ReservesNothingOnTheGlobalPolicy()
    {
        await using RunningApp app = await StartAsync(engine => engine
            .AddPolicy("service", _ => ServiceWide(_time, tokensPerDay: 1_000))
            .AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 1))
            .UseGlobalPolicy("service")
            .UseEstimate(EstimateHeader));
        RateEnginePolicies<HttpContext> policies = app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>();

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice", estimate: 100))).StatusCode);
        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/chat", "alice", estimate: 100));

        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        using JsonDocument problem = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        Assert.Equal("service+chat", problem.RootElement.GetProperty("policy").GetString());
        Assert.Equal("user", problem.RootElement.GetProperty("layer").GetString());
        Assert.Equal(100, ((RatePolicy<HttpContext>)policies["service"]).GetUsage(Context("alice"), "service tokens/day").Used);

        // An endpoint without a RateEngine policy of its own is still under the global one.
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "alice", estimate: 50))).StatusCode);
        Assert.Equal(150, ((RatePolicy<HttpContext>)policies["service"]).GetUsage(Context("alice"), "service tokens/day").Used);
    }

    [Fact]
    public async Task GlobalAndEndpointPolicies_GlobalRefuses_ReservesNothingOnTheEndpointPolicy()
    {
        await using RunningApp app = await StartAsync(engine => engine
            .AddPolicy("service", _ => ServiceWide(_time, tokensPerDay: 100))
            .AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 5))
            .UseGlobalPolicy("service")
            .UseEstimate(EstimateHeader));
        RateEnginePolicies<HttpContext> policies = app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>();

        // The global budget is spent by another user first: a request within every cap on its own is refused by the global
        // layer alone, after which the endpoint's layers must hold nothing of it (a check made before anything is taken,
        // as for an estimate above the cap, would not show that).
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "bob", estimate: 100))).StatusCode);
        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/chat", "alice", estimate: 1));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal(0, ((RatePolicy<HttpContext>)policies["chat"]).GetUsage(Context("alice"), "user").Used);
        Assert.Equal(0, ((RatePolicy<HttpContext>)policies["chat"]).GetUsage(Context("alice"), "user tokens/day").Used);
    }

    [Fact]
    public async Task Reconcile_FromTheEndpoint_ChangesTheRemainingBudget()
    {
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => PerUser(_time, 100, tokensPerDay: 1_000)).UseEstimate(EstimateHeader));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];

        using HttpResponseMessage response = await app.Client.SendAsync(Request("/reconcile?actual=120", "alice", estimate: 500));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("overrun 0", await response.Content.ReadAsStringAsync());
        LayerUsage tokens = policy.GetUsage(Context("alice"), "user tokens/day");
        Assert.Equal(120, tokens.Used);
        Assert.Equal(880, tokens.Remaining);
    }

    [Fact]
    public async Task Request_EndsWithoutReconcile_KeepsItsEstimate()
    {
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => PerUser(_time, 100, tokensPerDay: 1_000)).UseEstimate(EstimateHeader));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];

        using var settlements = new MetricCollector<long>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), "RateEngine", "rateengine.settlements");

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice", estimate: 300))).StatusCode);

        // Read once the request has ended (its end runs after the client has the response): the estimate stays spent.
        await WaitFor(() => settlements.GetMeasurementSnapshot().Count == 1);
        Assert.Equal("estimate_kept", settlements.GetMeasurementSnapshot().Single().Tags["rateengine.settlement"]);
        Assert.Equal(300, policy.GetUsage(Context("alice"), "user tokens/day").Used);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "alice", estimate: 701))).StatusCode);
    }

    [Fact]
    public async Task AbandonedStream_SettlesAtWhatWasCharged()
    {
        var settled = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => PerUser(_time, 100, tokensPerDay: 10_000)).UseEstimate(EstimateHeader));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];

        using (HttpResponseMessage response = await app.Client.SendAsync(Request("/stream", "alice", estimate: 5_000), HttpCompletionOption.ResponseHeadersRead))
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            for (int chunk = 0; chunk < 3; chunk++)
            {
                Assert.StartsWith("chunk", await reader.ReadLineAsync());
            }
        } // the client goes away mid-stream

        // The server notices at its next write; then the request ends and settles.
        long used = await SettledTokensAsync(policy, reserved: 5_000);

        Assert.InRange(used, 30, 4_990); // 10 tokens per chunk sent, not the 5,000 reserved
        Assert.Equal(0, used % 10);
    }

    [Fact]
    public async Task Refusal_ByAFullStreamSlotAndASpentDailyBudget_RetryAfterIsTheBudgetsMidnight()
    {
        // The slot frees when the stream ends, which nobody knows, so the policy promises no delay; but the day's budget is
        // spent until midnight, 15 hours away, and a Retry-After of the unknown 60 s sent the client back 900 times.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<HttpContext>().UseTimeProvider(_time)
            .AddLayer("streams", ByApiKey, PolicyRule.Concurrency(1))
            .AddLayer("user tokens/day", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day, limit: 100).Counting(PolicyMeter.Tokens))
            .Build()).UseEstimate(EstimateHeader));
        WebApplication web = builder.Build();
        web.UseRateLimiter();
        web.MapPost("/hold", async () =>
        {
            holding.TrySetResult();
            await release.Task;
            return "done";
        }).RequireRateLimiting("chat");
        await using RunningApp app = await RunningApp.StartAsync(web);
        Task<HttpResponseMessage> held = app.Client.SendAsync(Request("/hold", "alice", estimate: 100));
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(30)); // admitted: it holds the slot and the day's budget

        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/hold", "alice", estimate: 1));

        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal(TimeSpan.FromHours(15), refused.Headers.RetryAfter?.Delta);
        release.SetResult();
        using HttpResponseMessage done = await held;
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);
    }

    [Fact]
    public async Task StreamCutByARequestTimeout_SettlesAtWhatWasCharged()
    {
        // The request-timeouts middleware ahead of the rate limiter: it links RequestAborted to the timeout and puts the
        // original back when the request is over, so the end of a stream it cut used to read as a completed one.
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRequestTimeouts();
        builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => PerUser(_time, 100, tokensPerDay: 10_000)).UseEstimate(EstimateHeader));
        WebApplication web = builder.Build();
        web.UseRequestTimeouts();
        web.UseRateLimiter();
        web.MapPost("/stream", StreamChunksAsync).RequireRateLimiting("chat").WithRequestTimeout(TimeSpan.FromMilliseconds(300));
        await using RunningApp app = await RunningApp.StartAsync(web);
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];

        using (HttpResponseMessage response = await app.Client.SendAsync(Request("/stream", "alice", estimate: 5_000), HttpCompletionOption.ResponseHeadersRead))
        {
            try
            {
                await response.Content.ReadAsStringAsync(); // until the timeout ends it, well before its 500 chunks
            }
            catch (HttpRequestException)
            {
                // the server broke the stream off
            }
        }

        long used = await SettledTokensAsync(policy, reserved: 5_000);

        Assert.InRange(used, 10, 4_990); // 10 tokens per chunk sent, not the 5,000 reserved
        Assert.Equal(0, used % 10);
    }

    [Fact]
    public async Task RequestTimeoutWhileTheContextReadsTheBody_AnswersTheTimeoutsStatus()
    {
        // The in-box rate limiter returns without a status on a cancellation while RequestAborted is cancelled, and the
        // timeouts middleware answers only an exception: a body that stalled past the timeout was answered 200 with nothing.
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRequestTimeouts();
        builder.Services.AddRateEngine<BodyContext>(
            async http => new BodyContext((await http.Request.ReadFromJsonAsync<Dictionary<string, string>>(http.RequestAborted))!["user"]),
            engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<BodyContext>().UseTimeProvider(_time)
                .AddLayer("user", context => context.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 10)).Build()));
        WebApplication web = builder.Build();
        web.UseRequestTimeouts();
        web.UseRateLimiter();
        web.MapPost("/chat", () => "ok").RequireRateLimiting("chat").WithRequestTimeout(TimeSpan.FromMilliseconds(300));
        await using RunningApp app = await RunningApp.StartAsync(web);

        using var client = new System.Net.Sockets.TcpClient();
        await client.ConnectAsync(app.Client.BaseAddress!.Host, app.Client.BaseAddress.Port);
        System.Net.Sockets.NetworkStream stream = client.GetStream();
        string body = "{\"user\": \"alice\", \"padding\": \"";
        string head = $"POST /chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {body.Length + 60}\r\n\r\n";
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(head + body)); // then nothing more: the body stalls

        using var reader = new StreamReader(stream, System.Text.Encoding.ASCII);
        string? status = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal("HTTP/1.1 504 Gateway Timeout", status);
    }

    [Fact]
    public async Task RequestTimeoutWhileTheAppsOwnGlobalLimiterQueuesIt_AnswersTheTimeoutsStatus()
    {
        // The app's own global limiter (chained before RateEngine's) queues the request past its timeout: the same empty 200
        // as a stalled body, through the chain's wait.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRequestTimeouts();
        builder.Services.AddRateLimiter(options => options.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(
            _ => RateLimitPartition.GetConcurrencyLimiter("app", _ => new ConcurrencyLimiterOptions { PermitLimit = 1, QueueLimit = 4 })));
        builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => PerUser(_time, 100)).UseGlobalPolicy("chat"));
        WebApplication web = builder.Build();
        web.UseRequestTimeouts();
        web.UseRateLimiter();
        web.MapPost("/hold", () => release.Task);
        web.MapPost("/chat", () => "ok").WithRequestTimeout(TimeSpan.FromMilliseconds(300));
        await using RunningApp app = await RunningApp.StartAsync(web);

        Task<HttpResponseMessage> holding = app.Client.SendAsync(Request("/hold", "alice"));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];
        await WaitFor(() => policy.GetUsage(Context("alice"), "user").Used == 1); // admitted: holding the app's one slot
        using HttpResponseMessage queued = await app.Client.SendAsync(Request("/chat", "bob"));
        release.SetResult();
        using HttpResponseMessage held = await holding;

        Assert.Equal(HttpStatusCode.GatewayTimeout, queued.StatusCode);
        Assert.Equal(HttpStatusCode.OK, held.StatusCode);
    }

    [Fact]
    public async Task ClientGoneAfterAnEndpointWithoutSteps_KeepsTheEstimate()
    {
        // The endpoint does its whole work on the estimate and charges no steps; the client takes the answer and resets the
        // connection before the request ends. Settling at what the steps charged would refund the whole estimate for work
        // that was done (a client could then use its budget for free): a request that charged nothing keeps its estimate.
        var aborted = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using RunningApp app = await RunningApp.StartAsync(
            builder => builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => PerUser(_time, 100, tokensPerDay: 10_000)).UseEstimate(EstimateHeader)),
            map => map.MapPost("/answer", async (HttpContext http) =>
            {
                await http.Response.WriteAsync("the answer\n");
                await http.Response.Body.FlushAsync();
                for (int line = 0; line < 30; line++)
                {
                    // The rest of the answer, heedless of RequestAborted, for longer than the client drains a dropped
                    // response (2 s) before it closes the connection: a write finds the client gone.
                    await Task.Delay(100);
                    try
                    {
                        await http.Response.WriteAsync("more\n");
                        await http.Response.Body.FlushAsync();
                    }
                    catch (IOException)
                    {
                        // the client went away
                    }
                }

                aborted.TrySetResult(http.RequestAborted.IsCancellationRequested);
            }).RequireRateLimiting("chat"));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];
        using var settlements = new MetricCollector<long>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), "RateEngine", "rateengine.settlements");

        using (HttpResponseMessage response = await app.Client.SendAsync(Request("/answer", "alice", estimate: 5_000), HttpCompletionOption.ResponseHeadersRead))
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.Equal("the answer", await reader.ReadLineAsync());
        } // the client goes away before the response ends (as after the answer it came for)

        Assert.True(await aborted.Task.WaitAsync(TimeSpan.FromSeconds(10)), "the server did not see the client go");
        await WaitFor(() => settlements.GetMeasurementSnapshot().Count == 1); // the request has ended and settled
        Assert.Equal("estimate_kept", settlements.GetMeasurementSnapshot().Single().Tags["rateengine.settlement"]);
        Assert.Equal(5_000, policy.GetUsage(Context("alice"), "user tokens/day").Used);
    }

    [Fact]
    public async Task RefusedRequest_IsDecidedOnce_ThoughTheMiddlewareAcquiresTwice()
    {
        // Counted in the app's own estimate, which runs once per decision (a refused decision consumes nothing, so usage
        // could not tell one from two; the key selector also runs for a refusal's usage headers).
        int estimated = 0;
        await using RunningApp app = await StartAsync(engine => engine
            .AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 1))
            .UseEstimate((_, _) =>
            {
                Interlocked.Increment(ref estimated);
                return RequestCost.None;
            }));
        using var decisions = new MetricCollector<long>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), "RateEngine", "rateengine.requests");

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);

        IReadOnlyList<CollectedMeasurement<long>> measured = decisions.GetMeasurementSnapshot();
        Assert.Equal(3, measured.Sum(m => m.Value));
        Assert.Equal(1, measured.Where(m => m.Tags["rateengine.result"] as string == "admitted").Sum(m => m.Value));
        Assert.All(measured.Where(m => m.Tags["rateengine.result"] as string == "rejected"), m => Assert.Equal("user", m.Tags["rateengine.layer"]));
        Assert.All(measured, m => Assert.Equal("chat", m.Tags["rateengine.policy"]));
        Assert.Equal(3, Volatile.Read(ref estimated));
    }

    [Fact]
    public async Task Metrics_ModelsAClientMakesUp_TagOnlyTheFirstSixtyFourAndTheRestAsOther()
    {
        // The model comes from the request: a client naming a new one per request must not grow the app's metric series.
        await using RunningApp app = await StartAsync(
            engine => engine.AddPolicy("chat", _ => PerUser(_time, 1_000)).UseEstimate(EstimateHeader).UseModel(http => http.Request.Headers["X-Model"].ToString()));
        var meters = app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var settlements = new MetricCollector<long>(meters, "RateEngine", "rateengine.settlements");

        for (int i = 0; i < 100; i++)
        {
            using HttpRequestMessage request = Request("/chat", "alice", estimate: 1);
            request.Headers.Add("X-Model", $"made-up-{i}");
            Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(request)).StatusCode);
        }

        await WaitFor(() => settlements.GetMeasurementSnapshot().Count == 100);
        string?[] models = [.. settlements.GetMeasurementSnapshot().Select(m => m.Tags["gen_ai.request.model"] as string).Distinct()];
        Assert.Equal(65, models.Length); // 64 named, one "other"
        Assert.Contains("other", models);
        Assert.Contains("made-up-0", models);
        Assert.DoesNotContain("made-up-99", models);
    }

    [Fact]
    public async Task Metrics_TokensAndSettlements_AreTaggedByModelNeverByUser()
    {
        await using RunningApp app = await StartAsync(
            engine => engine.AddPolicy("chat", _ => PerUser(_time, 100)).UseEstimate(EstimateHeader).UseModel(_ => "small"));
        var meters = app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var tokens = new MetricCollector<long>(meters, "RateEngine", "rateengine.tokens");
        using var settlements = new MetricCollector<long>(meters, "RateEngine", "rateengine.settlements");
        using var durations = new MetricCollector<double>(meters, "RateEngine", "rateengine.acquire.duration");

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/reconcile?actual=42", "alice", estimate: 500))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "bob", estimate: 7))).StatusCode);

        await WaitFor(() => settlements.GetMeasurementSnapshot().Count == 2);
        Assert.Equal([42, 7], tokens.GetMeasurementSnapshot().Select(m => m.Value).Order().Reverse());
        Assert.All(tokens.GetMeasurementSnapshot(), m => Assert.Equal("small", m.Tags["gen_ai.request.model"]));
        Assert.Equal(["estimate_kept", "reconciled"], settlements.GetMeasurementSnapshot().Select(m => (string)m.Tags["rateengine.settlement"]!).Order());
        Assert.Equal(2, durations.GetMeasurementSnapshot().Count);
        Assert.All(tokens.GetMeasurementSnapshot().Concat(settlements.GetMeasurementSnapshot()), m =>
            Assert.DoesNotContain(m.Tags.Values, value => value as string is "alice" or "bob"));
    }

    [Fact]
    public async Task Metrics_UnreconciledOnALayerThatRefundsIt_CountsWhatTheBudgetKeeps()
    {
        // A token budget built with RefundingUnreconciled gives an unreconciled estimate back: the metric counted 500.
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(_time)
            .AddLayer("user tokens/day", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day, limit: 1_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .Build()).UseEstimate(EstimateHeader));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];
        var meters = app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var tokens = new MetricCollector<long>(meters, "RateEngine", "rateengine.tokens");
        using var settlements = new MetricCollector<long>(meters, "RateEngine", "rateengine.settlements");

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice", estimate: 500))).StatusCode);

        await WaitFor(() => settlements.GetMeasurementSnapshot().Count == 1);
        Assert.Equal(0, policy.GetUsage(Context("alice"), "user tokens/day").Used);
        Assert.Equal(0, tokens.GetMeasurementSnapshot().Sum(m => m.Value));
    }

    [Fact]
    public async Task Metrics_ReconcileListenerThrows_TheRequestCountsAsReconciled()
    {
        // The listener runs after every layer is settled: its exception fails the endpoint, but the request was reconciled.
        await using RunningApp app = await StartAsync(engine => engine
            .AddPolicy("chat", _ => new RatePolicyBuilder<HttpContext>()
                .UseTimeProvider(_time)
                .AddLayer("user tokens/day", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day, limit: 10_000).Counting(PolicyMeter.Tokens))
                .OnReconciled(_ => throw new InvalidDataException("the listener failed"))
                .Build())
            .UseEstimate(EstimateHeader));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];
        using var settlements = new MetricCollector<long>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), "RateEngine", "rateengine.settlements");

        Assert.Equal(HttpStatusCode.InternalServerError, (await app.Client.SendAsync(Request("/reconcile?actual=42", "alice", estimate: 500))).StatusCode);

        await WaitFor(() => settlements.GetMeasurementSnapshot().Count == 1);
        Assert.Equal(42, policy.GetUsage(Context("alice"), "user tokens/day").Used);
        Assert.Equal("reconciled", settlements.GetMeasurementSnapshot().Single().Tags["rateengine.settlement"]);
    }

    [Fact]
    public async Task Metrics_ListenerThrowsWhenTheRequestEnds_ItsSlotIsFreedAnyway()
    {
        // A faulty metrics listener throws from the settlement counter: the lease was disposed after the metric, so the
        // request's stream slot stayed held until a garbage collection finalized the lease. The retries below allocate
        // enough for a collection to run that finalizer, which frees the slot as well: so the test also asks that no lease
        // was ever abandoned (the finalizer reports each one it frees).
        int abandoned = 0;
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(_time)
            .AddLayer("streams", ByApiKey, PolicyRule.Concurrency(1))
            .OnLeaseAbandoned(_ => Interlocked.Increment(ref abandoned))
            .Build()));
        var meters = app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        using var listener = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, published) =>
            {
                if (ReferenceEquals(instrument.Meter.Scope, meters) && instrument.Name == "rateengine.settlements")
                {
                    published.EnableMeasurementEvents(instrument);
                }
            },
        };
        int thrown = 0;
        listener.SetMeasurementEventCallback<long>((_, _, _, _) =>
        {
            Interlocked.Increment(ref thrown);
            throw new InvalidOperationException("a faulty listener");
        });
        listener.Start();

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
        for (int wait = 0; wait < 500 && Volatile.Read(ref thrown) == 0; wait++)
        {
            await Task.Delay(20); // the request ends (and settles) just after its response; up to 10 s on a loaded machine
        }

        Assert.True(Volatile.Read(ref thrown) > 0, "the settlement metric was never recorded: the faulty listener never ran");
        await SlotComesBackUnabandoned(app, () => Volatile.Read(ref abandoned)); // the lease is disposed just after the metric threw
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Endpoint_Throws_ItsStreamSlotComesBackWhenTheRequestEnds(bool afterTheResponseStarted)
    {
        // A 500 from the endpoint, or a connection cut because it threw mid-response: either way the request ends, and its
        // concurrency slot must come back then, not when a collection finalizes a lease nobody disposed.
        int abandoned = 0;
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(_time)
            .AddLayer("streams", ByApiKey, PolicyRule.Concurrency(1))
            .OnLeaseAbandoned(_ => Interlocked.Increment(ref abandoned))
            .Build()));
        WebApplication web = builder.Build();
        web.UseRateLimiter();
        web.MapPost("/boom", async (HttpContext http) =>
        {
            if (afterTheResponseStarted)
            {
                await http.Response.WriteAsync("partial");
                await http.Response.Body.FlushAsync();
            }

            throw new InvalidOperationException("endpoint bug");
        }).RequireRateLimiting("chat");
        web.MapPost("/chat", () => "ok").RequireRateLimiting("chat");
        await using RunningApp app = await RunningApp.StartAsync(web);

        try
        {
            using HttpResponseMessage failed = await app.Client.SendAsync(Request("/boom", "alice"));
            Assert.False(afterTheResponseStarted, "a response cut after it started cannot complete");
            Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        }
        catch (HttpRequestException) when (afterTheResponseStarted)
        {
            // The server aborted the response it had begun.
        }

        await SlotComesBackUnabandoned(app, () => Volatile.Read(ref abandoned)); // the request ends just after the client saw its end
    }

    /// <summary>
    /// Alice's one stream slot is free again within 10 s (her next request is admitted), and no lease was abandoned: the
    /// retries allocate enough for a collection, whose finalizer would free a leaked slot too, and reports each it frees.
    /// </summary>
    private static async Task SlotComesBackUnabandoned(RunningApp app, Func<int> abandoned)
    {
        HttpStatusCode again = HttpStatusCode.TooManyRequests;
        for (int attempt = 0; attempt < 500 && again != HttpStatusCode.OK; attempt++)
        {
            await Task.Delay(attempt == 0 ? 0 : 20);
            using HttpResponseMessage response = await app.Client.SendAsync(Request("/chat", "alice"));
            again = response.StatusCode;
        }

        Assert.Equal(HttpStatusCode.OK, again);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Equal(0, abandoned());
    }

    [Fact]
    public async Task SuccessHeaders_WhenEnabled_CarryTheRateLimitFieldsAndTheOpenAiSet()
    {
        await using RunningApp app = await StartAsync(
            engine => engine.AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 10, tokensPerDay: 1_000)).UseEstimate(EstimateHeader),
            new Dictionary<string, string?> { ["RateEngine:RateLimitFieldsOnSuccess"] = "true", ["RateEngine:OpenAiHeaders"] = "true" });

        using HttpResponseMessage response = await app.Client.SendAsync(Request("/chat", "alice", estimate: 100));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var current = StructuredFieldList.Parse(Header(response, "RateLimit"));
        Assert.Equal(9, current.Single(item => (string)item.Value == "user").Integer("r"));
        Assert.Equal("10", Header(response, "x-ratelimit-limit-requests"));
        Assert.Equal("9", Header(response, "x-ratelimit-remaining-requests"));
        Assert.Equal("1m0s", Header(response, "x-ratelimit-reset-requests"));
        Assert.Equal("1000", Header(response, "x-ratelimit-limit-tokens"));
        Assert.Equal("900", Header(response, "x-ratelimit-remaining-tokens"));
        Assert.Equal("15h0m0s", Header(response, "x-ratelimit-reset-tokens"));
    }

    [Fact]
    public async Task SuccessHeaders_OpenAiSet_CarryTheTightestCostLayerThatIsNotServiceWide()
    {
        // A small tier's daily cost cap is what refuses it first: a client must see it coming. The service-wide cap is
        // tighter here, and no customer's business.
        RatePolicy<HttpContext> Costs(TimeProvider time) => new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(time)
            .AddLayer("user", ByApiKey, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 10))
            .AddLayer("user cost/day", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day, limit: 5_000).Counting(PolicyMeter.Money))
            .AddGlobalLayer("service cost/day", PolicyRule.Calendar(CalendarPeriod.Day, limit: 1_000).Counting(PolicyMeter.Money).AsServiceWide())
            .Build();
        await using RunningApp app = await StartAsync(
            engine => engine.AddPolicy("chat", _ => Costs(_time)).UseEstimate(EstimateHeader),
            new Dictionary<string, string?> { ["RateEngine:OpenAiHeaders"] = "true" });

        using HttpResponseMessage response = await app.Client.SendAsync(Request("/chat", "alice", estimate: 100));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("5000", Header(response, "x-ratelimit-limit-cost"));
        Assert.Equal("5000", Header(response, "x-ratelimit-remaining-cost"));
        Assert.Equal("0s", Header(response, "x-ratelimit-reset-cost")); // nothing spent yet: nothing to wait for
    }

    [Fact]
    public async Task Refusal_ByAServiceWideRequestLayer_ShowsNoRateLimitFieldsForIt()
    {
        // The service's remaining count is every customer's traffic together: the refusal names the layer, no more.
        RatePolicy<HttpContext> Service(TimeProvider time) => new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(time)
            .AddGlobalLayer("service", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 1).AsServiceWide())
            .Build();
        await using RunningApp app = await StartAsync(
            engine => engine.AddPolicy("chat", _ => Service(_time)),
            new Dictionary<string, string?> { ["RateEngine:RateLimitFieldsOnSuccess"] = "true" });

        using HttpResponseMessage admitted = await app.Client.SendAsync(Request("/chat", "alice"));
        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/chat", "bob"));

        Assert.Equal(HttpStatusCode.OK, admitted.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.False(admitted.Headers.Contains("RateLimit-Policy"));
        Assert.False(refused.Headers.Contains("RateLimit-Policy"));
        Assert.False(refused.Headers.Contains("RateLimit"));
    }

    [Fact]
    public async Task SuccessHeaders_ByDefault_AreNotSent()
    {
        await using RunningApp app = await StartAsync(engine => engine.AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 10)));

        using HttpResponseMessage response = await app.Client.SendAsync(Request("/chat", "alice"));

        Assert.False(response.Headers.Contains("RateLimit"));
        Assert.False(response.Headers.Contains("x-ratelimit-limit-requests"));
    }

    [Fact]
    public async Task ContextFactory_ReadsTheBody_DecidesOnceFromIt()
    {
        await using RunningApp app = await RunningApp.StartAsync(
            builder => builder.Services.AddRateEngine<BodyContext>(
                async http => new BodyContext((await http.Request.ReadFromJsonAsync<Dictionary<string, string>>())!["user"]),
                engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<BodyContext>().UseTimeProvider(_time)
                    .AddLayer("user", context => context.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 1)).Build())),
            map => map.MapPost("/chat", () => "ok").RequireRateLimiting("chat"));

        Assert.Equal(HttpStatusCode.OK, (await app.Client.PostAsJsonAsync("/chat", new { user = "alice" })).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.PostAsJsonAsync("/chat", new { user = "alice" })).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.PostAsJsonAsync("/chat", new { user = "bob" })).StatusCode);
    }

    [Fact]
    public async Task ContextFactory_ThrowsBadRequest_Answers400AndCountsNothing()
    {
        await using RunningApp app = await RunningApp.StartAsync(
            builder => builder.Services.AddRateEngine<string>(
                http => ValueTask.FromResult(HttpPartitionKeys.ApiKey(http) ?? throw new BadHttpRequestException("An API key is required.")),
                engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<string>().UseTimeProvider(_time)
                    .AddLayer("user", key => key, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 1)).Build())),
            map => map.MapPost("/chat", () => "ok").RequireRateLimiting("chat"));

        Assert.Equal(HttpStatusCode.BadRequest, (await app.Client.PostAsync("/chat", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
    }

    [Fact]
    public async Task Endpoint_WithoutAPolicyOrWithRateLimitingDisabled_IsNotLimited()
    {
        await using RunningApp app = await StartAsync(engine => engine
            .AddPolicy("service", _ => PerUser(_time, requestsPerMinute: 1))
            .UseGlobalPolicy("service"));

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/open", "alice"))).StatusCode);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/health", "alice", method: HttpMethod.Get))).StatusCode);
        }
    }

    [Fact]
    public async Task InBoxPolicies_AndAnAppsOwnRejectionHandler_KeepWorkingBesideRateEngine()
    {
        await using RunningApp app = await RunningApp.StartAsync(
            builder =>
            {
                builder.Services.AddRateLimiter(options =>
                {
                    options.AddFixedWindowLimiter("in-box", window => { window.PermitLimit = 1; window.Window = TimeSpan.FromHours(1); });
                    options.OnRejected = (rejected, _) =>
                    {
                        rejected.HttpContext.Response.StatusCode = 418;
                        return default;
                    };
                });
                builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 1)));
            },
            map =>
            {
                map.MapPost("/in-box", () => "ok").RequireRateLimiting("in-box");
                map.MapPost("/chat", () => "ok").RequireRateLimiting("chat");
            });

        Assert.Equal(HttpStatusCode.OK, (await app.Client.PostAsync("/in-box", null)).StatusCode);
        Assert.Equal((HttpStatusCode)418, (await app.Client.PostAsync("/in-box", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
    }

    [Fact]
    public async Task InBoxPolicyWithItsOwnRejectionHandler_GivesTheEstimateBackThroughTheFeature()
    {
        // An in-box policy's own OnRejected replaces the handler RateEngine registers, so the request RateEngine admitted
        // keeps its estimate unless that handler gives it back, which RefusedElsewhereAsync does.
        await using RunningApp app = await RunningApp.StartAsync(
            builder =>
            {
                builder.Services.AddRateLimiter(options => options.AddPolicy("in-box", new GivingBackPolicy()));
                builder.Services.AddRateEngine(engine => engine
                    .AddPolicy("tokens", _ => PerUser(_time, requestsPerMinute: 100, tokensPerDay: 1_000))
                    .UseGlobalPolicy("tokens")
                    .UseEstimate(EstimateHeader));
            },
            map => map.MapPost("/in-box", () => "ok").RequireRateLimiting("in-box"));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["tokens"];

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/in-box", "alice", estimate: 100))).StatusCode);
        Assert.Equal((HttpStatusCode)418, (await app.Client.SendAsync(Request("/in-box", "alice", estimate: 100))).StatusCode);

        Assert.Equal(100, policy.GetUsage(Context("alice"), "user tokens/day").Used); // the refused request's 100 came back
    }

    /// <summary>An in-box policy of one permit an hour whose own rejection handler gives RateEngine's estimate back.</summary>
    private sealed class GivingBackPolicy : IRateLimiterPolicy<string>
    {
        public Func<OnRejectedContext, CancellationToken, ValueTask>? OnRejected => async (rejected, _) =>
        {
            rejected.HttpContext.Response.StatusCode = 418;
            if (rejected.HttpContext.GetRateEngine() is { } rateEngine)
            {
                await rateEngine.RefusedElsewhereAsync();
            }
        };

        public RateLimitPartition<string> GetPartition(HttpContext httpContext) =>
            RateLimitPartition.GetFixedWindowLimiter("all", _ => new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromHours(1) });
    }

    [Fact]
    public async Task GlobalPolicyBesideAnInBoxEndpointLimiter_QueuedRequest_RunsHoldingItsSlot()
    {
        // The global RateEngine policy allows one request at a time per user; the endpoint's in-box limiter one at a time
        // in all, with a queue. Bob's request is admitted by RateEngine, refused by the busy in-box limiter's attempt (the
        // middleware disposes RateEngine's lease, freeing the slot) and then queued by its wait: it must run holding a
        // slot again, so bob's second request, elsewhere, is refused while the first waits or runs.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using RunningApp app = await RunningApp.StartAsync(
            builder =>
            {
                builder.Services.AddRateLimiter(options => options.AddConcurrencyLimiter("one at a time", limit =>
                {
                    limit.PermitLimit = 1;
                    limit.QueueLimit = 1;
                }));
                builder.Services.AddRateEngine(engine => engine
                    .AddPolicy("streams", _ => new RatePolicyBuilder<HttpContext>()
                        .UseTimeProvider(_time)
                        .AddLayer("streams", ByApiKey, PolicyRule.Concurrency(1))
                        .Build())
                    .UseGlobalPolicy("streams"));
            },
            map =>
            {
                map.MapPost("/slow", async () =>
                {
                    await gate.Task;
                    return "done";
                }).RequireRateLimiting("one at a time");
                map.MapPost("/open", () => "open");
            });

        var streams = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["streams"];
        Task<HttpResponseMessage> alice = app.Client.SendAsync(Request("/slow", "alice"));
        await WaitFor(() => streams.GetUsage(Context("alice"), "streams").Used == 1); // alice is admitted, and holds her slot
        Task<HttpResponseMessage> bob = app.Client.SendAsync(Request("/slow", "bob"));
        await WaitFor(() => streams.GetUsage(Context("bob"), "streams").Used == 1); // bob holds his slot, waiting in the in-box queue

        using HttpResponseMessage bobAgain = await app.Client.SendAsync(Request("/open", "bob"));
        Assert.Equal(HttpStatusCode.TooManyRequests, bobAgain.StatusCode);

        gate.SetResult();
        using HttpResponseMessage aliceDone = await alice;
        using HttpResponseMessage bobDone = await bob;
        Assert.Equal(HttpStatusCode.OK, aliceDone.StatusCode);
        Assert.Equal(HttpStatusCode.OK, bobDone.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "bob"))).StatusCode); // bob's slot is free again
    }

    [Fact]
    public async Task GlobalPolicyBesideAnInBoxEndpointLimiter_RequestItRefuses_IsDecidedOnceAndGetsItsEstimateBack()
    {
        // The endpoint's in-box fixed window admits one request an hour. The second request is admitted by RateEngine's
        // global policy, then refused by the in-box limiter's attempt and again by its wait: RateEngine must decide it once
        // (one request counted, not two) and give its estimate back (it never ran).
        await using RunningApp app = await RunningApp.StartAsync(
            builder =>
            {
                builder.Services.AddRateLimiter(options => options.AddFixedWindowLimiter("one an hour", limit =>
                {
                    limit.PermitLimit = 1;
                    limit.Window = TimeSpan.FromHours(1);
                    limit.QueueLimit = 0;
                }));
                builder.Services.AddRateEngine(engine => engine
                    .AddPolicy("users", _ => PerUser(_time, requestsPerMinute: 10))
                    .UseGlobalPolicy("users")
                    .UseEstimate(EstimateHeader));
            },
            map => map.MapPost("/rare", () => "ok").RequireRateLimiting("one an hour"),
            new Dictionary<string, string?> { ["RateEngine:RateLimitFieldsOnSuccess"] = "true" });
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["users"];
        using var settlements = new MetricCollector<long>(app.Services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), "RateEngine", "rateengine.settlements");

        using HttpResponseMessage admitted = await app.Client.SendAsync(Request("/rare", "alice", estimate: 100));
        Assert.Equal(HttpStatusCode.OK, admitted.StatusCode);
        Assert.True(admitted.Headers.Contains("RateLimit"));
        using HttpResponseMessage refused = await app.Client.SendAsync(Request("/rare", "alice", estimate: 100));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode); // the in-box middleware's default rejection
        Assert.False(refused.Headers.Contains("RateLimit")); // RateEngine's success fields would say it has room
        Assert.Equal(2, policy.GetUsage(Context("alice"), "user").Used);
        Assert.Equal(100, policy.GetUsage(Context("alice"), "user tokens/day").Used);
        await WaitFor(() => settlements.GetMeasurementSnapshot().Count == 2);
        Assert.Equal(["estimate_kept", "refused_elsewhere"], settlements.GetMeasurementSnapshot().Select(m => (string)m.Tags["rateengine.settlement"]!).Order());
    }

    [Fact]
    public async Task GlobalAndEndpointPoliciesThatCannotBeCombined_FailTheAppsStart()
    {
        // Both have a layer named "user": a refusal must name one layer, so they cannot be decided together. That is a
        // configuration error to report at start, not a 500 on every request to the endpoint.
        InvalidOperationException failure = await Assert.ThrowsAsync<InvalidOperationException>(() => RunningApp.StartAsync(
            builder => builder.Services.AddRateEngine(engine => engine
                .AddPolicy("edge", _ => PerUser(_time, requestsPerMinute: 100))
                .AddPolicy("chat", _ => PerUser(_time, requestsPerMinute: 10))
                .UseGlobalPolicy("edge")),
            map => map.MapPost("/chat", () => "ok").RequireRateLimiting("chat")));

        Assert.Contains("'edge' + 'chat'", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PipelineReExecutedForAnErrorPage_RequestIsDecidedAndChargedOnce()
    {
        // UseExceptionHandler runs the pipeline again, UseRateLimiter included, for the error page of a request whose
        // endpoint threw: that second pass must find the request's decision, not charge it again.
        await using RunningApp app = await StartWithAnErrorPage(appsOwnLimiter: null);
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["users"];

        using HttpResponseMessage failed = await app.Client.SendAsync(Request("/boom", "alice", estimate: 100));

        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        Assert.Equal(1, policy.GetUsage(Context("alice"), "user").Used);
        Assert.Equal(100, policy.GetUsage(Context("alice"), "user tokens/day").Used);
    }

    [Fact]
    public async Task DecisionThrows_TheErrorPageStillRuns_WithoutDecidingAgain()
    {
        // Deciding the request throws (a key selector's bug here; a store's script error alike). The pass the exception
        // handler re-executes for the error page must not decide again: it would throw again, and the handler, failing,
        // would rethrow the first exception: an empty 500 instead of the app's error page.
        int selected = 0;
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRateEngine(engine => engine
            .AddPolicy("users", _ => new RatePolicyBuilder<HttpContext>()
                .UseTimeProvider(_time)
                .AddLayer("user", http =>
                {
                    Interlocked.Increment(ref selected);
                    string key = HttpPartitionKeys.ApiKey(http) ?? "anonymous";
                    return key is "broken" ? throw new InvalidOperationException("selector bug") : key;
                }, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
                .Build())
            .UseGlobalPolicy("users"));
        WebApplication web = builder.Build();
        web.UseExceptionHandler("/error");
        web.UseRateLimiter();
        web.MapPost("/open", () => "open");
        web.MapPost("/error", () => Results.Problem("it broke"));
        await using RunningApp app = await RunningApp.StartAsync(web);

        using HttpResponseMessage failed = await app.Client.SendAsync(Request("/open", "broken"));

        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        Assert.Equal("application/problem+json", failed.Content.Headers.ContentType?.MediaType);
        Assert.Equal(1, selected);
    }

    [Fact]
    public async Task DecisionThrows_AnErrorPageUnderAnEndpointPolicy_StillRuns()
    {
        // The error page itself requires a RateEngine policy: on the rerun the global limiter does not decide again, and the
        // endpoint limiter, finding no decision, threw "RateEngine's global limiter did not run": an empty 500.
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(_time)
            .AddLayer("user", http => HttpPartitionKeys.ApiKey(http) is "broken" ? throw new InvalidOperationException("a selector's bug") : "user", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .Build()));
        WebApplication web = builder.Build();
        web.UseExceptionHandler("/error");
        web.UseRateLimiter();
        web.MapPost("/chat", () => "ok").RequireRateLimiting("chat");
        web.MapPost("/error", () => Results.Problem("it broke")).RequireRateLimiting("chat");
        await using RunningApp app = await RunningApp.StartAsync(web);

        using HttpResponseMessage failed = await app.Client.SendAsync(Request("/chat", "broken"));

        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        Assert.Equal("application/problem+json", failed.Content.Headers.ContentType?.MediaType);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
    }

    [Fact]
    public async Task PipelineReExecutedForAnErrorPage_TheAppsOwnLimiterRefusesTheRerun_TheRequestKeepsItsEstimate()
    {
        // The app's own global limiter admits one request an hour, so it refuses the error page's second pass. The endpoint
        // ran (it threw): RateEngine's "refused elsewhere" refund, meant for a request that never ran, must not give its
        // estimate back, or a client could make requests fail at the app limiter's edge and have them for free.
        await using RunningApp app = await StartWithAnErrorPage(appsOwnLimiter: AppsOwnLimiter(permitsPerHour: 1));
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["users"];

        using HttpResponseMessage failed = await app.Client.SendAsync(Request("/boom", "alice", estimate: 100));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, failed.StatusCode); // the app's own limiter refused the rerun
        Assert.Equal(100, policy.GetUsage(Context("alice"), "user tokens/day").Used);
    }

    [Fact]
    public async Task AppsOwnGlobalLimiter_ContextReadAsynchronously_IsChargedOncePerRequest()
    {
        // The app's global limiter admits 2 requests an hour. RateEngine's context completes asynchronously, so its
        // synchronous attempt is pending and the request is decided in the middleware's wait: the app's limiter must count
        // each request once, not once for the attempt and again for the wait.
        await using RunningApp app = await RunningApp.StartAsync(
            builder =>
            {
                builder.Services.AddRateLimiter(options => options.GlobalLimiter = AppsOwnLimiter(permitsPerHour: 2));
                builder.Services.AddRateEngine<string>(
                    async http =>
                    {
                        await Task.Yield();
                        return HttpPartitionKeys.ApiKey(http) ?? "anonymous";
                    },
                    engine => engine
                        .AddPolicy("service", _ => new RatePolicyBuilder<string>().UseTimeProvider(_time)
                            .AddLayer("user", key => key, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 100)).Build())
                        .UseGlobalPolicy("service"));
            },
            map => map.MapPost("/open", () => "open"));

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await app.Client.SendAsync(Request("/open", "alice"))).StatusCode); // the app's own refusal
    }

    [Fact]
    public async Task AppsOwnGlobalLimiter_RateEngineRefuses_IsChargedOncePerRequest()
    {
        // The app's global limiter admits 3 requests an hour; RateEngine 1 a minute per user. Alice's second request is
        // refused by RateEngine's synchronous attempt; the middleware's wait that follows must not charge the app's
        // limiter again, or bob, the third request, would find it spent.
        await using RunningApp app = await RunningApp.StartAsync(
            builder =>
            {
                builder.Services.AddRateLimiter(options => options.GlobalLimiter = AppsOwnLimiter(permitsPerHour: 3));
                builder.Services.AddRateEngine(engine => engine.AddPolicy("service", _ => PerUser(_time, requestsPerMinute: 1)).UseGlobalPolicy("service"));
            },
            map => map.MapPost("/open", () => "open"));

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/open", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/open", "bob"))).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await app.Client.SendAsync(Request("/open", "carol"))).StatusCode); // the app's 3
    }

    [Fact]
    public async Task AppsOwnGlobalLimiterRefuses_RateEngineChargesNothing()
    {
        // The app's global limiter (one request an hour) is asked first: a request it refuses never reaches RateEngine.
        await using RunningApp app = await RunningApp.StartAsync(
            builder =>
            {
                builder.Services.AddRateLimiter(options => options.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(
                    http => RateLimitPartition.GetFixedWindowLimiter(
                        http.Request.Path.Value ?? string.Empty, _ => new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromHours(1) })));
                builder.Services.AddRateEngine(engine => engine.AddPolicy("service", _ => PerUser(_time, requestsPerMinute: 2)).UseGlobalPolicy("service"));
            },
            map =>
            {
                map.MapPost("/first", () => "first");
                map.MapPost("/second", () => "second");
                map.MapPost("/third", () => "third");
            });

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/first", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await app.Client.SendAsync(Request("/first", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/second", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/third", "alice"))).StatusCode); // RateEngine: 2 a minute
    }

    [Fact]
    public async Task ModelSelectorThrows_TheRequestFails_AndHoldsNoSlot()
    {
        // The model selector (user code) throws: the request fails, and no concurrency slot may stay taken by it. It runs
        // before the policy is asked now, so nothing is acquired; when it ran after the lease was acquired, the middleware
        // never got that lease to dispose.
        await using RunningApp app = await StartAsync(engine => engine
            .AddPolicy("chat", _ => new RatePolicyBuilder<HttpContext>()
                .UseTimeProvider(_time)
                .AddLayer("streams", ByApiKey, PolicyRule.Concurrency(1))
                .Build())
            .UseModel(http => http.Request.Headers["X-Model"] == "bad" ? throw new FormatException("no such model") : "gpt"));

        using HttpRequestMessage bad = Request("/chat", "alice");
        bad.Headers.Add("X-Model", "bad");
        Assert.Equal(HttpStatusCode.InternalServerError, (await app.Client.SendAsync(bad)).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "alice"))).StatusCode);
    }

    internal static Task<RunningApp> StartAsync(Action<RateEngineBuilder<HttpContext>> engine, IDictionary<string, string?>? configuration = null) =>
        RunningApp.StartAsync(builder => builder.Services.AddRateEngine(engine), Map, configuration);

    /// <summary>Alice's tokens of the day once her request settled (polled: it settles when the server sees the request end).</summary>
    private static async Task<long> SettledTokensAsync(RatePolicy<HttpContext> policy, long reserved)
    {
        long used = reserved;
        for (int attempt = 0; attempt < 200 && used == reserved; attempt++)
        {
            await Task.Delay(25);
            used = policy.GetUsage(Context("alice"), "user tokens/day").Used;
        }

        return used;
    }

    /// <summary>A stream of 500 chunks, 10 tokens charged for each before it is written, reconciled at the end.</summary>
    private static async Task StreamChunksAsync(HttpContext http)
    {
        IRateEngineFeature rate = http.GetRateEngine()!;
        for (int chunk = 0; chunk < 500; chunk++)
        {
            await http.Response.WriteAsync($"chunk {chunk}\n", http.RequestAborted);
            await http.Response.Body.FlushAsync(http.RequestAborted);
            rate.Charge(new RequestCost(10, 0));
            await Task.Delay(10, http.RequestAborted);
        }

        rate.Reconcile();
    }

    /// <summary>The endpoints every test app has.</summary>
    internal static void Map(WebApplication app)
    {
        app.MapPost("/chat", () => "ok").RequireRateLimiting("chat");
        app.MapPost("/open", () => "open");
        app.MapGet("/health", () => "healthy").DisableRateLimiting();
        app.MapPost("/reconcile", (HttpContext http, long actual) =>
        {
            RequestCost overrun = http.GetRateEngine()!.Reconcile(new RequestCost(actual, 0));
            return $"overrun {overrun.Tokens}";
        }).RequireRateLimiting("chat");
        app.MapPost("/stream", StreamChunksAsync).RequireRateLimiting("chat");
    }

    /// <summary>An app's own global limiter, in-box: one fixed window for every request.</summary>
    /// <summary>
    /// An app whose "/boom" endpoint throws and whose UseExceptionHandler re-runs the pipeline for "/error"; RateEngine's
    /// global "users" policy counts requests and tokens, beside the app's own global limiter if one is given.
    /// </summary>
    private Task<RunningApp> StartWithAnErrorPage(PartitionedRateLimiter<HttpContext>? appsOwnLimiter)
    {
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        if (appsOwnLimiter is not null)
        {
            builder.Services.AddRateLimiter(options => options.GlobalLimiter = appsOwnLimiter);
        }

        builder.Services.AddRateEngine(engine => engine
            .AddPolicy("users", _ => PerUser(_time, requestsPerMinute: 10))
            .UseGlobalPolicy("users")
            .UseEstimate(EstimateHeader));
        WebApplication web = builder.Build();
        web.UseExceptionHandler("/error");
        web.UseRateLimiter();
        web.MapPost("/boom", string () => throw new InvalidOperationException("endpoint bug"));
        web.MapPost("/error", () => Results.Problem("it broke"));
        return RunningApp.StartAsync(web);
    }

    private static PartitionedRateLimiter<HttpContext> AppsOwnLimiter(int permitsPerHour) =>
        PartitionedRateLimiter.Create<HttpContext, string>(
            _ => RateLimitPartition.GetFixedWindowLimiter("app", _ => new FixedWindowRateLimiterOptions { PermitLimit = permitsPerHour, Window = TimeSpan.FromHours(1) }));

    internal static string Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out IEnumerable<string>? values) ? string.Join(", ", values) : throw new Xunit.Sdk.XunitException($"No {name} header.");

    private static async Task WaitFor(Func<bool> condition)
    {
        for (int attempt = 0; attempt < 1_000 && !condition(); attempt++) // up to 10 s: the callers assert what they wait for
        {
            await Task.Delay(10);
        }
    }

    public sealed record BodyContext(string User);
}
