using System.Runtime.CompilerServices;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Samples.AiGateway;

namespace RateEngine.Tests.Policies;

/// <summary>The README's policy is <see cref="GatewayPolicy"/>, word for word, and it does what the README says.</summary>
public class ReadmeExampleTests
{
    private static readonly PriceTable Prices = new([new ModelPrice("small", 0.15m, 0.60m), new ModelPrice("large", 2.50m, 10.00m)]);

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 9, 0, 0, TimeSpan.Zero));
    private readonly List<ThresholdCrossing> _crossings = [];

    [Fact]
    public void Readme_ShowsTheExampleVerbatim()
    {
        string example = Between(File.ReadAllText(Path.Combine(RepositoryRoot(), "src", "RateEngine.Samples.AiGateway", "GatewayPolicy.cs")), "// README:begin\n", "// README:end");
        string readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md")).ReplaceLineEndings("\n");

        Assert.Contains(example, readme, StringComparison.Ordinal);
    }

    [Fact]
    public void Handle_FreeTierUser_SpendsTenCentsThenGets429UntilMidnight()
    {
        using RatePolicy<ChatRequest> policy = GatewayPolicy.Create(_time, _crossings.Add);
        var estimator = new CostEstimator<string>();
        var request = new ChatRequest("10.0.0.1", "alice", "red", "free", "search", "large", MaxTokens: 1_000);

        var statuses = new List<int>();
        for (int i = 0; i < 20; i++)
        {
            statuses.Add(GatewayPolicy.Handle(policy, Prices, estimator, request, promptTokens: 1_000, outputTokens: 500));
            _time.Advance(TimeSpan.FromMinutes(1));
        }

        // Each request costs 1,000 x 2.5 + 500 x 10 = 7,500 micro-dollars, and reserves 1,000 x 2.5 + 1,000 x 10 = 12,500
        // (the estimator has seen too few answers to learn): after 12 (90,000) the 13th's reservation no longer fits 10 cents.
        Assert.Equal(12, statuses.Count(status => status == 200));
        Assert.All(statuses.SkipWhile(status => status == 200), status => Assert.Equal(429, status));
        Assert.Equal(90_000, policy.GetUsage(request, "user cost/day").Used);
        Assert.Equal([0.5, 0.8], _crossings.Select(crossing => crossing.Threshold));
        _time.Advance(TimeSpan.FromHours(15)); // past midnight UTC
        Assert.Equal(200, GatewayPolicy.Handle(policy, Prices, estimator, request, 1_000, 500));
    }

    [Fact]
    public void Handle_ExpensiveToolAndStreams_TighterLimitsAndConcurrencyPerUser()
    {
        using RatePolicy<ChatRequest> policy = GatewayPolicy.Create(_time, _crossings.Add);
        var estimator = new CostEstimator<string>();
        var browse = new ChatRequest("10.0.0.2", "bob", "red", "pro", "web_browse", "small", MaxTokens: 200);

        int[] statuses = [.. Enumerable.Range(0, 7).Select(_ => GatewayPolicy.Handle(policy, Prices, estimator, browse, 100, 100))];
        Assert.Equal([200, 200, 200, 200, 200, 429, 429], statuses);
        Assert.Equal(200, GatewayPolicy.Handle(policy, Prices, estimator, browse with { Tool = "search" }, 100, 100));

        // Four streams open for a pro user: the fifth is refused until one ends.
        var chat = browse with { Tool = "chat" };
        PolicyLease[] open = [.. Enumerable.Range(0, 4).Select(_ => policy.Acquire(chat, new RequestCost(10, 10)))];
        PolicyLease fifth = policy.Acquire(chat, new RequestCost(10, 10));
        Assert.Equal("user streams", fifth.BlockingLayer);
        open[0].Dispose();
        Assert.True(policy.Acquire(chat, new RequestCost(10, 10)).IsAcquired);
    }

    [Fact]
    public void Handle_GlobalCapOrPause_503ForEveryone()
    {
        using RatePolicy<ChatRequest> policy = GatewayPolicy.Create(_time, _crossings.Add);
        var estimator = new CostEstimator<string>();
        var request = new ChatRequest("10.0.0.3", "carol", "blue", "enterprise", "chat", "small", MaxTokens: 100);

        policy.Pause("incident 42: upstream provider outage");

        Assert.Equal(503, GatewayPolicy.Handle(policy, Prices, estimator, request, 10, 10));
        policy.Resume();
        Assert.Equal(200, GatewayPolicy.Handle(policy, Prices, estimator, request, 10, 10));
    }

    private static string Between(string text, string begin, string end)
    {
        text = text.ReplaceLineEndings("\n");
        int start = text.IndexOf(begin, StringComparison.Ordinal) + begin.Length;
        return text[start..text.IndexOf(end, start, StringComparison.Ordinal)];
    }


    private static string RepositoryRoot([CallerFilePath] string here = "")
    {
        DirectoryInfo? directory = new FileInfo(here).Directory;
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "RateEngine.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new DirectoryNotFoundException("RateEngine.sln not found above " + here);
    }
}
