using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using RateEngine.AspNetCore.Tests.Support;
using static RateEngine.AspNetCore.Tests.Support.Policies;

namespace RateEngine.AspNetCore.Tests;

/// <summary>Tiers from configuration: validated at start with the key named, and reloaded live keeping usage.</summary>
public sealed class RateEngineOptionsTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 9, 0, 0, TimeSpan.Zero));

    [Theory]
    [InlineData("RateEngine:Policies:chat:Tiers:free:no such layer", "5", "RateEngine:Policies:chat:Tiers:free:no such layer: the policy has no layer named 'no such layer'")]
    [InlineData("RateEngine:Policies:nope:Tiers:free:user", "5", "RateEngine:Policies:nope: no RateEngine policy named 'nope' is registered (registered: chat)")]
    [InlineData("RateEngine:Policies:chat:Tiers:free:user", "-1", "RateEngine:Policies:chat:Tiers:free:user must be between 1 and 2147483647 (it is -1)")]
    [InlineData("RateEngine:Policies:chat:Tiers:free:user", "0", "RateEngine:Policies:chat:Tiers:free:user must be between 1 and 2147483647 (it is 0)")]
    [InlineData("RateEngine:Policies:chat:Tiers:free:fixed", "5", "RateEngine:Policies:chat:Tiers:free:fixed: layer 'fixed' has a fixed limit (10), so tiers do not apply to it")]
    [InlineData("RateEngine:Policies:chat:Tiers:Free:user", "5", "RateEngine:Policies:chat:Tiers:Free: the policy has no tier 'Free' but has 'free' (tier names are case-sensitive)")]
    [InlineData("RateEngine:RejectedStatusCode", "200", "RateEngine:RejectedStatusCode must be an HTTP error status, 400 to 599 (it is 200)")]
    [InlineData("RateEngine:UnknownRetryAfterSeconds", "0", "RateEngine:UnknownRetryAfterSeconds must be at least 1 (it is 0)")]
    public async Task Start_BadConfiguration_FailsNamingTheKey(string key, string value, string message)
    {
        var exception = await Assert.ThrowsAsync<OptionsValidationException>(() =>
            RunningApp.StartAsync(builder => builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => Tiered())), RateEngineMiddlewareTests.Map,
                new Dictionary<string, string?> { [key] = value }));

        Assert.Contains(message, exception.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_ConfiguredTier_OverridesOnlyThePairsItNames()
    {
        await using RunningApp app = await StartTieredAsync(new() { ["RateEngine:Policies:chat:Tiers:free:user"] = "1" });
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];

        PolicyTiers tiers = policy.GetTiers();

        Assert.Equal(1, tiers["free"]["user"]);
        Assert.Equal(1_000, tiers["free"]["tokens"]); // as built
        Assert.Equal(50, tiers["pro"]["user"]);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
    }

    [Fact]
    public async Task Reload_TierLimitRaised_KeepsTheUsageCountedAndAppliesTheNewLimit()
    {
        await using RunningApp app = await StartTieredAsync(new() { ["RateEngine:Policies:chat:Tiers:free:user"] = "2" });
        var configuration = (IConfigurationRoot)app.Services.GetRequiredService<IConfiguration>();
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);

        configuration["RateEngine:Policies:chat:Tiers:free:user"] = "3";
        configuration.Reload();

        Assert.Equal(3, policy.GetTiers()["free"]["user"]);
        Assert.Equal(2, policy.GetUsage(Context("free-alice"), "user").Used); // kept
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
    }

    [Fact]
    public async Task Reload_OfAnotherSection_KeepsTiersSetAtRunTime()
    {
        // An operator tightens a tier at run time; a reload of anything else (a logging level, a vault's refresh) used to
        // lay the configuration over the built tiers again and put the looser limit back.
        await using RunningApp app = await StartTieredAsync(new() { ["RateEngine:Policies:chat:Tiers:free:user"] = "4" });
        var configuration = (IConfigurationRoot)app.Services.GetRequiredService<IConfiguration>();
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];
        PolicyTiers tightened = policy.GetTiers();
        tightened["free"]["user"] = 1;
        policy.UpdateTiers(tightened);

        configuration["Logging:LogLevel:Default"] = "Warning";
        configuration.Reload();

        Assert.Equal(1, policy.GetTiers()["free"]["user"]);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);

        configuration["RateEngine:Policies:chat:Tiers:free:user"] = "3"; // the policy's own section: configuration wins
        configuration.Reload();
        Assert.Equal(3, policy.GetTiers()["free"]["user"]);
        Assert.Equal(1_000, policy.GetTiers()["free"]["tokens"]);
    }

    [Fact]
    public async Task Reload_InvalidOptions_RequestsGoOnUnderTheOptionsInForce()
    {
        // A reload that fails validation (a rejection status that is not an error) must not turn every request into a
        // 500: the options in force stay, as the tiers do.
        await using RunningApp app = await StartTieredAsync(new() { ["RateEngine:Policies:chat:Tiers:free:user"] = "1" });
        var configuration = (IConfigurationRoot)app.Services.GetRequiredService<IConfiguration>();
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);

        configuration["RateEngine:RejectedStatusCode"] = "200";
        try
        {
            configuration.Reload();
        }
        catch (AggregateException error) when (error.Flatten().InnerExceptions.All(inner => inner is OptionsValidationException))
        {
            // how the options monitor reports it, on the thread that reloads
        }

        Assert.Equal(HttpStatusCode.TooManyRequests, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-bob"))).StatusCode);
    }

    [Fact]
    public async Task StatusCodes_Configured_AnswerRefusalsAndServiceWideRefusals()
    {
        await using RunningApp app = await StartTieredAsync(new()
        {
            ["RateEngine:Policies:chat:Tiers:free:user"] = "1",
            ["RateEngine:RejectedStatusCode"] = "403",
            ["RateEngine:ServiceWideStatusCode"] = "502",
        });
        var policy = (RatePolicy<HttpContext>)app.Services.GetRequiredService<RateEnginePolicies<HttpContext>>()["chat"];
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);

        Assert.Equal(HttpStatusCode.Forbidden, (await app.Client.SendAsync(Request("/chat", "free-alice"))).StatusCode);
        policy.Pause("maintenance");
        Assert.Equal(HttpStatusCode.BadGateway, (await app.Client.SendAsync(Request("/chat", "free-bob"))).StatusCode);
        policy.Resume();
        Assert.Equal(HttpStatusCode.OK, (await app.Client.SendAsync(Request("/chat", "free-bob"))).StatusCode);
    }

    [Fact]
    public async Task Start_ServiceWideStatusCodeNotAnError_FailsNamingTheKey()
    {
        var exception = await Assert.ThrowsAsync<OptionsValidationException>(() => StartTieredAsync(new() { ["RateEngine:ServiceWideStatusCode"] = "302" }));

        Assert.Contains("RateEngine:ServiceWideStatusCode", exception.Message, StringComparison.Ordinal);
    }

    private Task<RunningApp> StartTieredAsync(Dictionary<string, string?> configuration) =>
        RunningApp.StartAsync(builder => builder.Services.AddRateEngine(engine => engine.AddPolicy("chat", _ => Tiered())), RateEngineMiddlewareTests.Map, configuration);

    // Tier by the API key's prefix: "free-alice" is on the free tier.
    private RatePolicy<HttpContext> Tiered() => new RatePolicyBuilder<HttpContext>()
        .UseTimeProvider(_time)
        .UseTiers(http => ByApiKey(http).Split('-')[0], new PolicyTiers
        {
            ["free"] = { ["user"] = 5, ["tokens"] = 1_000 },
            ["pro"] = { ["user"] = 50, ["tokens"] = 100_000 },
        })
        .AddLayer("user", ByApiKey, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)))
        .AddLayer("tokens", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Tokens))
        .AddLayer("fixed", ByApiKey, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 10))
        .Build();
}
