using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using RateEngine.AspNetCore.Tests.Support;
using static RateEngine.AspNetCore.Tests.Support.GatewayCalls;
using RateEngine.Samples.AiGateway;

namespace RateEngine.AspNetCore.Tests;

/// <summary>The sample gateway end to end, on Kestrel, with the README's policy and a fake clock.</summary>
public sealed class GatewaySampleTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 9, 0, 0, TimeSpan.Zero));

    [Fact]
    public void PromptTokens_WordsOnSeparateLines_CountEachWord()
    {
        // Split on spaces alone, a prompt of one word per line counted as one token: a cheap way around the token and cost
        // layers.
        var body = new RateEngine.Samples.AiGateway.ChatBody { Messages = [new() { Content = "one\ntwo\tthree\r\nfour five" }] };

        Assert.Equal(5 + 3, RateEngine.Samples.AiGateway.FakeModel.PromptTokens(body)); // five words, three for the message
    }

    [Theory]
    [InlineData("inbox")]
    [InlineData("none")]
    public void Build_RedisWithAnotherLimiter_RefusesTheFlagsClearly(string limiter)
    {
        // Only RateEngine's policy runs on Redis. The other limiters took --redis without a word and then failed to start
        // (the health endpoint was mapped without its service).
        ArgumentException error = Assert.Throws<ArgumentException>(() =>
            GatewayApp.Build(["--urls=http://127.0.0.1:0", "--limiter", limiter, "--redis", "127.0.0.1:1"]));
        Assert.Contains("--redis applies to --limiter rateengine only", error.Message);
    }

    [Fact]
    public async Task Chat_FreeUser_TwentyAMinuteThen429FromTheUserLayer()
    {
        await using RunningApp gateway = await StartAsync();

        for (int i = 0; i < 20; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-alice")).StatusCode);
        }

        using HttpResponseMessage refused = await Chat(gateway, "sk-alice");
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("user", (await Problem(refused)).GetProperty("layer").GetString());
        Assert.NotNull(refused.Headers.RetryAfter?.Delta);

        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-alice")).StatusCode);
    }

    [Fact]
    public async Task Chat_Admitted_SendsEveryRateLimitHeaderTheReadmesTranscriptShows()
    {
        // The README shows real responses of the sample: a header the sample sends and the transcript lacks (the cost
        // headers, added after the transcript was taken) makes it a transcript of another program.
        await using RunningApp gateway = await StartAsync();
        using HttpResponseMessage admitted = await Chat(gateway, "sk-alice");
        Assert.Equal(HttpStatusCode.OK, admitted.StatusCode);
        Assert.Equal("100000", Assert.Single(admitted.Headers.GetValues("x-ratelimit-limit-cost")));

        string readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md"));
        string[] sent = admitted.Headers.Select(header => header.Key)
            .Where(name => name.StartsWith("x-ratelimit-", StringComparison.OrdinalIgnoreCase) || name.StartsWith("RateLimit", StringComparison.OrdinalIgnoreCase))
            .ToArray();
        Assert.Equal(11, sent.Length); // RateLimit-Policy, RateLimit, and three each for requests, tokens and cost
        Assert.All(sent, name => Assert.Contains($"\n{name}: ", readme.ReplaceLineEndings("\n"), StringComparison.OrdinalIgnoreCase));
    }

    private static string RepositoryRoot([System.Runtime.CompilerServices.CallerFilePath] string here = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(here)!, "..", ".."));

    [Fact]
    public async Task Tools_ExpensiveToolIsTighter_AndCountedPerTool()
    {
        await using RunningApp gateway = await StartAsync();

        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-bob", "/v1/tools/web_browse")).StatusCode);
        }

        using HttpResponseMessage refused = await Chat(gateway, "sk-bob", "/v1/tools/web_browse");
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("tool calls/min", (await Problem(refused)).GetProperty("layer").GetString());
        Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-bob", "/v1/tools/search")).StatusCode);
    }

    [Fact]
    public async Task Streams_FreeUserHasOne_AnAbandonedStreamFreesItAndPaysForWhatItGot()
    {
        await using RunningApp gateway = await StartAsync(chunkDelayMilliseconds: 1_000);
        await AbandonedStreamFreesItsSlotAndPaysForWhatItGot(gateway, gateway, _time);
    }

    [Fact]
    public async Task Cost_DailyCapOfTheTier_RefusesWithItsReason_UntilMidnight()
    {
        await using RunningApp gateway = await StartAsync(configuration: new() { ["RateEngine:Policies:gateway:Tiers:team:user cost/day"] = "5000" });

        var statuses = new List<HttpStatusCode>();
        for (int i = 0; i < 10; i++)
        {
            statuses.Add((await Chat(gateway, "sk-carol", model: "large")).StatusCode);
        }

        Assert.Contains(HttpStatusCode.OK, statuses);
        Assert.Equal(HttpStatusCode.TooManyRequests, statuses[^1]);
        using HttpResponseMessage refused = await Chat(gateway, "sk-carol", model: "large");
        JsonElement problem = await Problem(refused);
        Assert.Equal("user cost/day", problem.GetProperty("layer").GetString());
        Assert.Equal("daily cost cap reached", problem.GetProperty("detail").GetString());
        Assert.Equal(TimeSpan.FromHours(15), refused.Headers.RetryAfter?.Delta);
        Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-dave", model: "large")).StatusCode); // another user
    }

    [Fact]
    public async Task Cost_GlobalDailyCap_Answers503ForEveryone()
    {
        await using RunningApp gateway = await StartAsync(configuration: new() { ["RateEngine:Policies:gateway:Tiers:service:global cost/day"] = "10000" });

        HttpStatusCode last = HttpStatusCode.OK;
        for (int i = 0; i < 20 && last == HttpStatusCode.OK; i++)
        {
            last = (await Chat(gateway, "sk-dave", model: "large")).StatusCode;
        }

        Assert.Equal(HttpStatusCode.ServiceUnavailable, last);
        using HttpResponseMessage other = await Chat(gateway, "sk-bob", model: "large"); // its reservation no longer fits either
        Assert.Equal(HttpStatusCode.ServiceUnavailable, other.StatusCode);
        JsonElement problem = await Problem(other);
        Assert.Equal("global cost/day", problem.GetProperty("layer").GetString());
        Assert.False(problem.TryGetProperty("limit", out _)); // the service's cap and spend are no customer's business
        Assert.False(problem.TryGetProperty("remaining", out _));
        Assert.Equal(TimeSpan.FromHours(15), other.Headers.RetryAfter?.Delta);

        using var usage = new HttpRequestMessage(HttpMethod.Get, "/usage");
        usage.Headers.Add("Authorization", "Bearer sk-bob");
        JsonElement layers = (await (await gateway.Client.SendAsync(usage)).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("layers");
        Assert.DoesNotContain(layers.EnumerateArray(), layer => layer.GetProperty("layer").GetString() == "global cost/day");
    }

    [Fact]
    public async Task Admin_PauseAnswers503UntilResumed_AndNeedsTheAdminKey()
    {
        await using RunningApp gateway = await StartAsync();

        Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Client.PostAsync("/admin/pause", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Admin(gateway, "/admin/pause?reason=incident")).StatusCode);
        using HttpResponseMessage paused = await Chat(gateway, "sk-dave");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, paused.StatusCode);
        Assert.Equal("incident", (await Problem(paused)).GetProperty("detail").GetString());
        Assert.Equal(TimeSpan.FromSeconds(60), paused.Headers.RetryAfter?.Delta);

        Assert.Equal(HttpStatusCode.OK, (await Admin(gateway, "/admin/resume")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-dave")).StatusCode);
    }

    [Fact]
    public async Task Usage_ShowsEveryLayerAndWhatIsLeft_AfterTheReconcile()
    {
        await using RunningApp gateway = await StartAsync();
        using HttpResponseMessage answer = await Chat(gateway, "sk-bob");
        JsonElement usage = (await answer.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("usage");

        JsonElement tokens = await Layer(gateway, "sk-bob", "user tokens/day");

        Assert.Equal(usage.GetProperty("total_tokens").GetInt64(), tokens.GetProperty("used").GetInt64()); // the actual, not the estimate
        Assert.Equal(10_000_000 - tokens.GetProperty("used").GetInt64(), tokens.GetProperty("remaining").GetInt64());
        Assert.Equal(1, (await Layer(gateway, "sk-bob", "user")).GetProperty("used").GetInt64());
    }

    [Fact]
    public async Task Chat_UnknownKeyOrBadBody_Answers401Or400_AndGuessingKeysIsCapped()
    {
        await using RunningApp gateway = await StartAsync();

        Assert.Equal(HttpStatusCode.Unauthorized, (await Chat(gateway, "sk-nobody")).StatusCode);
        for (int i = 1; i < UnknownKeyGuard.PerMinute; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await Chat(gateway, $"sk-guess-{i}")).StatusCode);
        }

        // Guessing keys is capped per address: the unknown keys never reach the policy, whose layers need an account.
        using (HttpResponseMessage capped = await Chat(gateway, "sk-guess-last"))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, capped.StatusCode);
            Assert.InRange(capped.Headers.RetryAfter?.Delta ?? TimeSpan.Zero, TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1)); // until its minute ends
            Assert.Equal("application/problem+json", capped.Content.Headers.ContentType?.MediaType);
        }

        Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-bob")).StatusCode);
        using var bad = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent("{not json", Encoding.UTF8, "application/json") };
        bad.Headers.Add("Authorization", "Bearer sk-bob");
        Assert.Equal(HttpStatusCode.BadRequest, (await gateway.Client.SendAsync(bad)).StatusCode);

        // A chat request in another content type is the client's 415, not the server's 500.
        using var plain = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(new { model = "small", max_tokens = 10, messages = new[] { new { role = "user", content = "hi" } } }), Encoding.UTF8, "text/plain"),
        };
        plain.Headers.Add("Authorization", "Bearer sk-bob");
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, (await gateway.Client.SendAsync(plain)).StatusCode);

        // So is JSON in a charset the reader does not know (it threw before any layer counted the request: a free 500).
        using var bogus = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(JsonSerializer.Serialize(new { model = "small", max_tokens = 10, messages = new[] { new { role = "user", content = "hi" } } })),
        };
        bogus.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json") { CharSet = "bogus" };
        bogus.Headers.Add("Authorization", "Bearer sk-bob");
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, (await gateway.Client.SendAsync(bogus)).StatusCode);
    }

    [Fact]
    public async Task Admin_WrongKeys_AreCappedAsKeyGuesses()
    {
        // One right guess pauses the whole service: admin calls are capped per address, on a budget of their own, so API
        // key guesses from others behind the same address cannot lock the operator out.
        await using RunningApp gateway = await StartAsync();
        for (int i = 0; i <= UnknownKeyGuard.PerMinute; i++)
        {
            _ = await Chat(gateway, $"sk-guess-{i}");
        }

        Assert.Equal(HttpStatusCode.OK, (await Admin(gateway, "/admin/resume")).StatusCode);
        for (int i = 1; i < UnknownKeyGuard.PerMinute; i++)
        {
            using var guess = new HttpRequestMessage(HttpMethod.Post, "/admin/pause");
            guess.Headers.Add("X-Admin-Key", $"guess-{i}");
            Assert.Equal(HttpStatusCode.Unauthorized, (await gateway.Client.SendAsync(guess)).StatusCode);
        }

        using var last = new HttpRequestMessage(HttpMethod.Post, "/admin/pause");
        last.Headers.Add("X-Admin-Key", "guess-last");
        Assert.Equal(HttpStatusCode.TooManyRequests, (await gateway.Client.SendAsync(last)).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await Admin(gateway, "/admin/pause")).StatusCode); // even the right key: no more tries
    }

    [Fact]
    public async Task Tools_OnlyKnownOnes_AndTheirTierWhateverTheCase()
    {
        await using RunningApp gateway = await StartAsync();

        Assert.Equal(HttpStatusCode.NotFound, (await Chat(gateway, "sk-bob", "/v1/tools/made_up")).StatusCode); // no key taken for it
        for (int call = 0; call < 5; call++)
        {
            Assert.Equal(HttpStatusCode.OK, (await Chat(gateway, "sk-bob", call % 2 == 0 ? "/v1/tools/Code_Interpreter" : "/v1/tools/code_interpreter")).StatusCode);
        }

        using HttpResponseMessage sixth = await Chat(gateway, "sk-bob", "/v1/tools/CODE_INTERPRETER"); // the expensive tier's 5 a minute
        Assert.Equal(HttpStatusCode.TooManyRequests, sixth.StatusCode);
        Assert.Equal("tool calls/min", (await Problem(sixth)).GetProperty("layer").GetString());
    }

    [Fact]
    public async Task Chat_NullFieldsInTheBody_Answer400Not500()
    {
        await using RunningApp gateway = await StartAsync();
        foreach (string body in (string[])["""{"model":null,"max_tokens":10,"messages":[]}""", """{"model":"small","max_tokens":10,"messages":null}""", """{"model":"small","max_tokens":10,"messages":[null]}""", """{"model":"small","max_tokens":10,"messages":[{"role":"user","content":null}]}"""])
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            request.Headers.Add("Authorization", "Bearer sk-bob");
            Assert.Equal(HttpStatusCode.BadRequest, (await gateway.Client.SendAsync(request)).StatusCode);
        }
    }

    [Fact]
    public async Task Chat_BodyOverTheCap_Answers413_DeclaredOrChunked_AndSpendsNothing()
    {
        await using RunningApp gateway = await StartAsync(configuration: new() { ["Gateway:MaxRequestBytes"] = "4096" });
        string large = JsonSerializer.Serialize(new { model = "small", max_tokens = 10, messages = new[] { new { role = "user", content = new string('x', 8_000) } } });

        // Declared: refused from its Content-Length, unread.
        using var declared = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(large, Encoding.UTF8, "application/json") };
        declared.Headers.Add("Authorization", "Bearer sk-alice");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await gateway.Client.SendAsync(declared)).StatusCode);

        // Chunked, no length: Kestrel stops reading at the cap.
        using var chunked = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(large))) };
        chunked.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        chunked.Headers.TransferEncodingChunked = true;
        chunked.Headers.Add("Authorization", "Bearer sk-alice");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await gateway.Client.SendAsync(chunked)).StatusCode);

        // A body under the cap still passes, and the refused ones took nothing from the user's 20 a minute.
        for (int i = 0; i < 20; i++)
        {
            using HttpResponseMessage ok = await Chat(gateway, "sk-alice");
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        Assert.Equal(HttpStatusCode.TooManyRequests, (await Chat(gateway, "sk-alice")).StatusCode);
    }

    private Task<RunningApp> StartAsync(int chunkDelayMilliseconds = 0, Dictionary<string, string?>? configuration = null)
    {
        WebApplication app = GatewayApp.Build(["--urls=http://127.0.0.1:0", $"--Gateway:ChunkDelayMilliseconds={chunkDelayMilliseconds}"], builder =>
        {
            builder.Services.AddSingleton<TimeProvider>(_time);
            if (configuration is not null)
            {
                builder.Configuration.AddInMemoryCollection(configuration);
            }
        });
        return RunningApp.StartAsync(app);
    }
}
