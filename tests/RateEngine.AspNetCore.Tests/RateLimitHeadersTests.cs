using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;
using RateEngine.AspNetCore.Http;
using RateEngine.AspNetCore.Tests.Support;

namespace RateEngine.AspNetCore.Tests;

public sealed class RateLimitHeadersTests
{
    [Fact]
    public void WriteIetf_LayerNamesWithQuotesAndNonAscii_StayValidStructuredFields()
    {
        var time = new FakeTimeProvider();
        using RatePolicy<string> policy = new RatePolicyBuilder<string>().UseTimeProvider(time)
            .AddLayer("a \"quoted\" \\ layer", key => key, PolicyRule.SlidingWindowCounter(TimeSpan.FromSeconds(90), 3, limit: 7))
            .AddLayer("café streams", key => key, PolicyRule.Concurrency(limit: 2))
            .AddLayer("soft", key => key, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: 5).AsSoft(0.5))
            .Build();
        using PolicyLease lease = policy.Acquire("k");
        var headers = new HeaderDictionary();

        RateLimitHeaders.WriteIetf(headers, policy, policy.GetUsage("k"), blockingLayer: "café streams");

        var policies = StructuredFieldList.Parse(headers["RateLimit-Policy"]!);
        var current = StructuredFieldList.Parse(headers["RateLimit"]!);
        Assert.Equal(["caf? streams", "a \"quoted\" \\ layer"], policies.Select(item => (string)item.Value));
        Assert.Equal("concurrent-requests", policies[0].Parameters["qu"]);
        Assert.Equal(90, policies[1].Integer("w"));
        Assert.Equal(1, current[0].Integer("r"));
        Assert.False(current[0].Parameters.ContainsKey("t"));
        Assert.Equal(6, current[1].Integer("r"));
    }
}
