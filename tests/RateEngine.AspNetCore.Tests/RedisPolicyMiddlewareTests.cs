using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using RateEngine.AspNetCore.Tests.Support;
using RateEngine.Redis;
using RateEngine.Redis.Tests.Support;
using StackExchange.Redis;
using static RateEngine.AspNetCore.Tests.Support.Policies;

namespace RateEngine.AspNetCore.Tests;

/// <summary>A RateEngine policy on a real redis-server behind the in-box middleware, on a real Kestrel server.</summary>
public sealed class RedisPolicyMiddlewareTests : IDisposable
{
    private readonly RedisServer _redis = new();

    public void Dispose() => _redis.Dispose();

    [Fact]
    public async Task Request_DecidedWithARoundTrip_RunsTheAppsEstimateOnce()
    {
        // A policy on Redis cannot decide in the middleware's synchronous attempt: the request is decided in its wait, with
        // what the attempt already read. The app's estimate ran in both, so user code ran twice per request.
        using ConnectionMultiplexer connection = await ConnectionMultiplexer.ConnectAsync(_redis.Endpoint.ToString());
        using RedisRatePolicy<HttpContext> policy = new RedisRatePolicyBuilder<HttpContext>(
                new RedisLimiterOptions { Connection = connection, KeyPrefix = "once", SyncTimeout = TimeSpan.FromSeconds(5) })
            .AddLayer("user tokens/day", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day, limit: 10_000).Counting(PolicyMeter.Tokens))
            .Build();
        int estimated = 0;
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => policy).UseEstimate((http, context) =>
        {
            Interlocked.Increment(ref estimated);
            return EstimateHeader(http, context);
        }));
        WebApplication app = builder.Build();
        app.UseRateLimiter();
        app.MapPost("/chat", () => "ok").RequireRateLimiting("chat");
        await using RunningApp running = await RunningApp.StartAsync(app);

        for (int i = 0; i < 3; i++)
        {
            using HttpResponseMessage response = await running.Client.SendAsync(Request("/chat", "alice", estimate: 100));
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        }

        Assert.Equal(3, Volatile.Read(ref estimated));
        Assert.Equal(300, (await policy.GetUsageAsync(Context("alice"))).Single().Used);
    }

    [Fact]
    public async Task AbandonedStream_RedisNotAnswering_TheRequestEndsAtOnce_AndSettlesWhenRedisIsBack()
    {
        // Generous client timeouts: a settle that blocked the middleware's thread would hold the request's end for a minute.
        using ConnectionMultiplexer connection = await ConnectionMultiplexer.ConnectAsync(
            new ConfigurationOptions { EndPoints = { _redis.Endpoint }, AsyncTimeout = 60_000, SyncTimeout = 60_000 });
        using RedisRatePolicy<HttpContext> policy = new RedisRatePolicyBuilder<HttpContext>(
                new RedisLimiterOptions { Connection = connection, KeyPrefix = "abort", SyncTimeout = TimeSpan.FromSeconds(60) })
            .AddLayer("user tokens/day", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day, limit: 10_000).Counting(PolicyMeter.Tokens))
            .Build();

        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        WebApplicationBuilder builder = RunningApp.CreateBuilder();
        builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => policy).UseEstimate(EstimateHeader));
        WebApplication app = builder.Build();
        app.Use(async (http, next) =>
        {
            // Registered before the rate limiter's decision registers its end: the server runs these callbacks in reverse,
            // so this one runs once the decision's end has returned (a settle that blocked there on the frozen store would
            // hold it, and the request's end with it).
            http.Response.OnCompleted(() =>
            {
                ended.TrySetResult();
                return Task.CompletedTask;
            });
            await next(http);
        });
        app.UseRateLimiter();
        app.MapPost("/stream", async (HttpContext http) =>
        {
            IRateEngineFeature rate = http.GetRateEngine()!;
            for (int chunk = 0; chunk < 3_000; chunk++)
            {
                await rate.ChargeAsync(new RequestCost(10, 0)); // within the estimate: no round trip
                await http.Response.WriteAsync($"chunk {chunk}\n", http.RequestAborted);
                await http.Response.Body.FlushAsync(http.RequestAborted);
                await Task.Delay(10, http.RequestAborted);
            }
        }).RequireRateLimiting("chat");
        await using RunningApp running = await RunningApp.StartAsync(app);

        using (HttpResponseMessage response = await running.Client.SendAsync(Request("/stream", "alice", estimate: 5_000), HttpCompletionOption.ResponseHeadersRead))
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            for (int chunk = 0; chunk < 3; chunk++)
            {
                Assert.StartsWith("chunk", await reader.ReadLineAsync());
            }

            _redis.Freeze();
        } // the client goes away mid-stream, while Redis does not answer

        try
        {
            await ended.Task.WaitAsync(TimeSpan.FromSeconds(20)); // the settle must not hold the request (nor a pool thread)
        }
        finally
        {
            _redis.Thaw();
        }

        long used = 5_000;
        for (int attempt = 0; attempt < 200 && used == 5_000; attempt++)
        {
            await Task.Delay(25);
            used = (await policy.GetUsageAsync(Context("alice"))).Single().Used;
        }

        Assert.InRange(used, 30, 4_990); // what the chunks charged, not the 5,000 reserved
        Assert.Equal(0, used % 10);
    }
}
