using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;
using RateEngine.AspNetCore.Tests.Support;
using static RateEngine.AspNetCore.Tests.Support.GatewayCalls;
using RateEngine.Redis.Tests.Support;
using RateEngine.Samples.AiGateway;

namespace RateEngine.AspNetCore.Tests;

/// <summary>
/// The sample gateway with <c>--redis</c>: two instances on real Kestrel share one real redis-server, so every cap, the
/// pause and the usage are the fleet's, not an instance's.
/// </summary>
public sealed class GatewayOnRedisTests : IDisposable
{
    private readonly RedisServer _redis = new();
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 9, 0, 0, TimeSpan.Zero));
    private readonly FakeLogCollector _logs = new();

    public void Dispose() => _redis.Dispose();

    [Fact]
    public async Task Chat_TwoInstances_ShareTheUsersTwentyAMinute()
    {
        await using RunningApp a = await StartAsync();
        await using RunningApp b = await StartAsync();

        // A team-tier user (8 streams): a request's slot is freed at the request's end, after the response is written, so
        // a free user's one slot may still be on its way back when the client sends the next request.
        for (int i = 0; i < 20; i++)
        {
            using HttpResponseMessage ok = await Chat(i % 2 == 0 ? a : b, "sk-carol");
            Assert.True(ok.StatusCode == HttpStatusCode.OK, $"request {i}: {ok.StatusCode} {await ok.Content.ReadAsStringAsync()}");
        }

        foreach (RunningApp instance in new[] { a, b })
        {
            using HttpResponseMessage refused = await Chat(instance, "sk-carol");
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            Assert.Equal("user", (await Problem(refused)).GetProperty("layer").GetString());
            Assert.NotNull(refused.Headers.RetryAfter?.Delta);
        }

        Assert.Equal(HttpStatusCode.OK, (await Chat(b, "sk-bob")).StatusCode); // another user
    }

    [Fact]
    public async Task Usage_ShowsTheActualTokens_HereAtOnce_OnTheOtherInstanceOnceThisOnesBlocksAreBack()
    {
        RunningApp a = await StartAsync();
        await using RunningApp b = await StartAsync();
        using HttpResponseMessage answer = await Chat(a, "sk-bob");
        Assert.Contains("\"user\";r=19", string.Join(',', answer.Headers.GetValues("RateLimit")), StringComparison.Ordinal); // reported by the decision's script
        long total = (await answer.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("usage").GetProperty("total_tokens").GetInt64();

        JsonElement tokens = await Layer(a, "sk-bob", "user tokens/day");
        Assert.Equal(total, tokens.GetProperty("used").GetInt64()); // the actual, not the estimate
        Assert.Equal(10_000_000 - total, tokens.GetProperty("remaining").GetInt64());
        Assert.Equal(1, (await Layer(b, "sk-bob", "user")).GetProperty("used").GetInt64()); // the sliding log is decided on Redis

        // The other instance's view also counts what `a` holds reserved (hybrid mode); when `a` stops, its blocks go back.
        Assert.True((await Layer(b, "sk-bob", "user tokens/day")).GetProperty("used").GetInt64() >= total);
        await a.DisposeAsync();
        for (int attempt = 0; attempt < 100 && (await Layer(b, "sk-bob", "user tokens/day")).GetProperty("used").GetInt64() != total; attempt++)
        {
            await Task.Delay(20);
        }

        Assert.Equal(total, (await Layer(b, "sk-bob", "user tokens/day")).GetProperty("used").GetInt64());
    }

    [Fact]
    public async Task Pause_OnOneInstance_Answers503OnBoth_UntilResumedOnTheOther()
    {
        await using RunningApp a = await StartAsync();
        await using RunningApp b = await StartAsync();

        Assert.Equal(HttpStatusCode.OK, (await Admin(a, "/admin/pause?reason=incident")).StatusCode);
        using HttpResponseMessage paused = await Chat(b, "sk-dave");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, paused.StatusCode);
        Assert.Equal("incident", (await Problem(paused)).GetProperty("detail").GetString());
        Assert.Equal(TimeSpan.FromSeconds(60), paused.Headers.RetryAfter?.Delta); // a pause has no end: UnknownRetryAfterSeconds

        Assert.Equal(HttpStatusCode.OK, (await Admin(b, "/admin/resume")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Chat(a, "sk-dave")).StatusCode);
    }

    [Fact]
    public async Task Streams_OneSlotAcrossInstances_AnAbandonedStreamFreesItAndPaysForWhatItGot()
    {
        await using RunningApp a = await StartAsync(chunkDelayMilliseconds: 1_000);
        RunningApp b = await StartAsync(chunkDelayMilliseconds: 1_000);
        await AbandonedStreamFreesItsSlotAndPaysForWhatItGot(a, b, _time, settleOthers: () => b.DisposeAsync().AsTask());
    }

    [Fact]
    public async Task RedisDown_RequestsAnswer503FailClosed_AndHealthSaysUnhealthy()
    {
        await using RunningApp a = await StartAsync();
        Assert.Equal(HttpStatusCode.OK, (await a.Client.GetAsync("/health")).StatusCode);

        _redis.Kill();
        for (int i = 0; i < 5; i++)
        {
            using HttpResponseMessage refused = await Chat(a, "sk-bob");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.Equal("redis", (await Problem(refused)).GetProperty("layer").GetString());
            Assert.True(refused.Headers.RetryAfter?.Delta > TimeSpan.Zero, "a Redis outage's 503 says when to come back: the breaker's cool-down");
        }

        // The refusals name no layer of the policy: no usage was asked of the dead store for them (it would have failed and
        // logged a warning per request). That RateEngine's warnings reach this collector at all shows the outage's own.
        Assert.Contains(_logs.GetSnapshot(), log => log.Id.Name == "RedisUnavailable");
        Assert.DoesNotContain(_logs.GetSnapshot(), log => log.Id.Name == "UsageUnavailable");
        using HttpResponseMessage health = await a.Client.GetAsync("/health");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        Assert.Equal("Unhealthy", await health.Content.ReadAsStringAsync());
    }

    private Task<RunningApp> StartAsync(int chunkDelayMilliseconds = 0)
    {
        WebApplication app = GatewayApp.Build(
            ["--urls=http://127.0.0.1:0", "--redis", _redis.Endpoint, $"--Gateway:ChunkDelayMilliseconds={chunkDelayMilliseconds}"],
            builder =>
            {
                builder.Services.AddSingleton<TimeProvider>(_time);
                builder.Logging.AddProvider(new FakeLoggerProvider(_logs));
            });
        return RunningApp.StartAsync(app);
    }
}
