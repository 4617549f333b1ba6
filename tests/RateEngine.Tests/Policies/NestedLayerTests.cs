using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Policies;

public sealed record ToolCall(string User, string Tool);

/// <summary>Layers keyed by (key, sub-key) with <see cref="RatePolicyBuilder{TContext}.AddNestedLayer"/>: per user, per tool.</summary>
public class NestedLayerTests
{
    private static readonly string[] Users = ["ann", "bob"];
    private static readonly string[] Tools = ["search", "chat", "code", "sql"];
    private static readonly Func<ToolCall, string> ByUser = call => call.User;

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 12, 0, 0, TimeSpan.Zero));

    private RatePolicyBuilder<ToolCall> Builder() => new RatePolicyBuilder<ToolCall>().UseTimeProvider(_time);

    [Fact]
    public void AddNestedLayer_EachPair_CountsApart()
    {
        using RatePolicy<ToolCall> policy = Builder()
            .AddLayer("user", ByUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .AddNestedLayer("tool", ByUser, call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 2))
            .Build();

        Assert.Equal(1, policy.KeyTableCount); // the pairs live in the users' entries
        Assert.True(policy.Acquire(new ToolCall("ann", "search")).IsAcquired);
        Assert.True(policy.Acquire(new ToolCall("ann", "search")).IsAcquired);
        PolicyLease refused = policy.Acquire(new ToolCall("ann", "search"));
        Assert.Equal("tool", refused.BlockingLayer);
        Assert.Equal(TimeSpan.FromMinutes(1), refused.RetryAfter);
        Assert.True(policy.Acquire(new ToolCall("ann", "chat")).IsAcquired);
        Assert.True(policy.Acquire(new ToolCall("bob", "search")).IsAcquired);

        Assert.Equal(2, policy.GetUsage(new ToolCall("ann", "search"), "tool").Used);
        Assert.Equal(1, policy.GetUsage(new ToolCall("ann", "chat"), "tool").Used);
        Assert.Equal(0, policy.GetUsage(new ToolCall("ann", "sql"), "tool").Used);
        Assert.Equal(3, policy.GetUsage(new ToolCall("ann", "sql"), "user").Used); // the refused call took nothing
    }

    [Fact]
    public void Charge_KeyEvictedAndTheSubKeySelectorThrowsOnTheWayBack_TheNextChargeCountsOnTheLiveCell()
    {
        // A stream outlives its window; the sweep evicts its key. The next charge looks the key up again, and the sub-key
        // selector throws there: the hold must stay on the evicted entry, or the charge after it lands on the dead cell.
        bool failing = false;
        using RatePolicy<ToolCall> policy = Builder()
            .AddNestedLayer("tool tokens", ByUser, call => failing ? throw new FormatException("selector bug") : call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new ToolCall("ann", "search");
        PolicyLease stream = policy.Acquire(call, new RequestCost(10, 0));
        _time.Advance(TimeSpan.FromMinutes(2));
        policy.SweepAll();

        failing = true;
        Assert.Throws<FormatException>(() => stream.Charge(new RequestCost(60, 0)));
        failing = false;
        stream.Charge(new RequestCost(30, 0)); // 90 spent, 80 past the estimate

        Assert.Equal(80, policy.GetUsage(call, "tool tokens").Used);
    }

    [Fact]
    public void AddNestedLayer_MoreSubKeysThanTheBound_RefusesUntilIdleOnesMakeRoom()
    {
        using RatePolicy<ToolCall> policy = Builder()
            .AddLayer("user", ByUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100))
            .AddNestedLayer("tool", ByUser, call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddNestedLayer("tool alerts", ByUser, call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5).AsSoft(1.0))
            .WithMaxSubKeysPerKey(2)
            .Build();
        Assert.True(policy.Acquire(new ToolCall("ann", "search")).IsAcquired);
        Assert.True(policy.Acquire(new ToolCall("ann", "chat")).IsAcquired);

        PolicyLease refused = policy.Acquire(new ToolCall("ann", "sql"));
        Assert.False(refused.IsAcquired);
        Assert.Equal("tool", refused.BlockingLayer);
        Assert.Contains("2 sub-keys", refused.Reason, StringComparison.Ordinal);
        Assert.Equal(2, policy.GetUsage(new ToolCall("ann", "sql"), "user").Used);
        Assert.True(policy.Acquire(new ToolCall("bob", "sql")).IsAcquired); // another key has its own room

        _time.Advance(TimeSpan.FromMinutes(1)); // both of ann's tools idle: a new one takes a place
        Assert.True(policy.Acquire(new ToolCall("ann", "sql")).IsAcquired);
        Assert.True(policy.Acquire(new ToolCall("ann", "code")).IsAcquired);
        Assert.Equal(1, policy.GetUsage(new ToolCall("ann", "sql"), "tool").Used);
        Assert.Equal(0, policy.GetUsage(new ToolCall("ann", "search"), "tool").Used);
    }

    [Fact]
    public void AddNestedLayer_BadSelectors_ThrowClearlyAndChangeNothing()
    {
        Assert.Throws<ArgumentNullException>(() => Builder().AddNestedLayer<string, string>("tool", ByUser, null!, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder().WithMaxSubKeysPerKey(0));
        using RatePolicy<ToolCall> policy = Builder()
            .AddLayer("user", ByUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100))
            .AddNestedLayer("tool", ByUser, call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .Build();

        var error = Assert.Throws<InvalidOperationException>(() => policy.Acquire(new ToolCall("ann", null!)));
        Assert.Contains("sub-key selector of layer 'tool'", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, policy.GetUsage(new ToolCall("ann", "chat"), "user").Used);
    }

    [Fact]
    public void OnThresholdCrossed_NestedSoftLayer_ReportsTheKeyAndSubKey()
    {
        var crossings = new List<ThresholdCrossing>();
        using RatePolicy<ToolCall> policy = Builder()
            .AddNestedLayer("tool alerts", ByUser, call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 2).AsSoft(1.0))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        policy.Acquire(new ToolCall("ann", "chat")).Dispose();
        policy.Acquire(new ToolCall("ann", "chat")).Dispose();

        ThresholdCrossing crossing = Assert.Single(crossings);
        Assert.Equal(("ann", "chat"), crossing.Key);
    }

    /// <summary>
    /// A nested layer decides exactly as the same rule keyed by the (key, sub-key) tuple, over random calls, time and sweeps
    /// (the bound on sub-keys is above the tools in play, so it never refuses).
    /// </summary>
    [Property(MaxTest = 200)]
    public Property RandomCalls_DecideAsTheTupleKeyedLayer() => Prop.ForAll(
        Gen.ArrayOf(Gen.Frequency(
            (6, from user in Gen.Choose(0, Users.Length - 1) from tool in Gen.Choose(0, Tools.Length - 1) from tokens in Gen.Choose(0, 400)
                select (Kind: 0, User: user, Tool: tool, Amount: tokens)),
            (2, Gen.Choose(1, 90).Select(seconds => (Kind: 1, User: 0, Tool: 0, Amount: seconds))),
            (1, Gen.Constant((Kind: 2, User: 0, Tool: 0, Amount: 0))))).ToArbitrary(),
        ops =>
        {
            using RatePolicy<ToolCall> nested = Builder()
                .AddLayer("user", ByUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 12))
                .AddNestedLayer("tool", ByUser, call => call.Tool, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 4, 3))
                .AddNestedLayer("tool tokens", ByUser, call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 900).Counting(PolicyMeter.Tokens))
                .WithMaxSubKeysPerKey(Tools.Length)
                .Build();
            using RatePolicy<ToolCall> tupled = Builder()
                .AddLayer("user", ByUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 12))
                .AddLayer("tool", call => (call.User, call.Tool), PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 4, 3))
                .AddLayer("tool tokens", call => (call.User, call.Tool), PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 900).Counting(PolicyMeter.Tokens))
                .Build();
            foreach (var op in ops)
            {
                switch (op.Kind)
                {
                    case 0:
                        var call = new ToolCall(Users[op.User], Tools[op.Tool]);
                        var cost = new RequestCost(op.Amount, 0);
                        using (PolicyLease a = nested.Acquire(call, cost))
                        using (PolicyLease b = tupled.Acquire(call, cost))
                        {
                            Assert.Equal(b.BlockingLayer, a.BlockingLayer);
                            Assert.Equal(b.RetryAfter, a.RetryAfter);
                        }

                        foreach (string tool in Tools)
                        {
                            var probe = new ToolCall(call.User, tool);
                            Assert.Equal(tupled.GetUsage(probe).Select(u => u.Used), nested.GetUsage(probe).Select(u => u.Used));
                        }

                        break;
                    case 1:
                        _time.Advance(TimeSpan.FromSeconds(op.Amount));
                        break;
                    default:
                        nested.SweepAll();
                        tupled.SweepAll();
                        break;
                }
            }
        });
}
