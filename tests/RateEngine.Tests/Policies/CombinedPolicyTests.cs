using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Policies;

/// <summary><see cref="RatePolicy{TContext}.Combine"/>: several policies decided as one, sharing their state.</summary>
public class CombinedPolicyTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero));

    private RatePolicy<Call> Service(long tokensPerDay, Action<ReconcileRecord>? onReconciled = null)
    {
        RatePolicyBuilder<Call> builder = new RatePolicyBuilder<Call>().UseTimeProvider(_time)
            .AddGlobalLayer("service tokens", PolicyRule.Calendar(CalendarPeriod.Day, tokensPerDay).Counting(PolicyMeter.Tokens).AsServiceWide());
        return (onReconciled is null ? builder : builder.OnReconciled(onReconciled)).Build();
    }

    private RatePolicy<Call> PerUser(long perMinute, TimeProvider? time = null) =>
        new RatePolicyBuilder<Call>().UseTimeProvider(time ?? _time)
            .AddLayer("user", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), perMinute))
            .AddLayer("user log", call => call.User, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), 100))
            .Build();

    [Fact]
    public void Acquire_GlobalBucketAndACallersLog_DecidesTheCallersLogFirst()
    {
        // A bucket's undo fails once another request took from it, which on a busy global key is nearly always: decided
        // before a caller's exhausted log, a global bucket would be drained by that caller's refused requests, for everyone.
        using RatePolicy<Call> service = new RatePolicyBuilder<Call>().UseTimeProvider(_time)
            .AddGlobalLayer("global bucket", PolicyRule.TokenBucket(tokenLimit: 2, tokensPerPeriod: 1, TimeSpan.FromHours(1)))
            .Build();
        using RatePolicy<Call> endpoint = new RatePolicyBuilder<Call>().UseTimeProvider(_time)
            .AddLayer("ip log", call => call.User, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), 1))
            .Build();
        using RatePolicy<Call> both = RatePolicy<Call>.Combine(service, endpoint);
        using (PolicyLease first = both.Acquire(new Call("mallory"), RequestCost.None))
        {
            Assert.True(first.IsAcquired);
        }

        using (PolicyLease second = both.Acquire(new Call("alice"), RequestCost.None))
        {
            Assert.True(second.IsAcquired); // the bucket is empty now, and mallory's log full
        }

        using PolicyLease refused = both.Acquire(new Call("mallory"), RequestCost.None);
        Assert.Equal("ip log", refused.BlockingLayer); // decided first: the global bucket is not touched by it
    }

    [Fact]
    public void Acquire_OnePolicyRefuses_TheOtherKeepsNothing()
    {
        using RatePolicy<Call> service = Service(tokensPerDay: 1_000);
        using RatePolicy<Call> user = PerUser(perMinute: 1);
        using RatePolicy<Call> both = RatePolicy<Call>.Combine(service, user);
        var alice = new Call("alice");

        Assert.True(both.Acquire(alice, new RequestCost(100, 0)).IsAcquired);
        PolicyLease refusedByUser = both.Acquire(alice, new RequestCost(100, 0));
        PolicyLease refusedByService = both.Acquire(new Call("bob"), new RequestCost(901, 0));

        Assert.Equal("user", refusedByUser.BlockingLayer);
        Assert.Equal("service tokens", refusedByService.BlockingLayer);
        Assert.True(refusedByService.IsServiceWide);
        Assert.Equal(100, service.GetUsage(alice, "service tokens").Used);
        Assert.Equal(0, user.GetUsage(new Call("bob"), "user").Used);
        Assert.Equal(0, user.GetUsage(new Call("bob"), "user log").Used);
    }

    [Fact]
    public void Acquire_ThroughEither_CountsForBoth()
    {
        using RatePolicy<Call> service = Service(tokensPerDay: 1_000);
        using RatePolicy<Call> user = PerUser(perMinute: 2);
        using RatePolicy<Call> both = RatePolicy<Call>.Combine(service, user);
        var alice = new Call("alice");

        Assert.True(user.Acquire(alice).IsAcquired);
        Assert.True(both.Acquire(alice, new RequestCost(10, 0)).IsAcquired);

        Assert.False(both.Acquire(alice).IsAcquired);
        Assert.False(user.Acquire(alice).IsAcquired);
        Assert.Equal(10, service.GetUsage(alice, "service tokens").Used);
        Assert.Equal(["service tokens", "user", "user log"], both.LayerNames);
    }

    [Fact]
    public void Reconcile_ThroughTheCombination_SettlesEveryLayerAndReportsToItsOwnPolicy()
    {
        var records = new List<ReconcileRecord>();
        using RatePolicy<Call> service = Service(tokensPerDay: 1_000, records.Add);
        using RatePolicy<Call> user = PerUser(perMinute: 2);
        using RatePolicy<Call> both = RatePolicy<Call>.Combine(service, user);

        using PolicyLease lease = both.Acquire(new Call("alice"), new RequestCost(500, 0));
        lease.Reconcile(new RequestCost(120, 0));

        Assert.Equal(120, service.GetUsage(new Call("alice"), "service tokens").Used);
        ReconcileRecord record = Assert.Single(records);
        Assert.Equal("service tokens", record.Layer);
        Assert.Equal(380, record.Refunded);
    }

    [Fact]
    public void Acquire_ASourceIsPaused_TheCombinationIsToo()
    {
        using RatePolicy<Call> service = Service(tokensPerDay: 1_000);
        using RatePolicy<Call> user = PerUser(perMinute: 2);
        using RatePolicy<Call> both = RatePolicy<Call>.Combine(service, user);

        service.Pause("maintenance");
        PolicyLease paused = both.Acquire(new Call("alice"));
        Assert.True(both.IsPaused); // its requests are refused as paused: so it says
        service.Resume();

        Assert.Equal("pause", paused.BlockingLayer);
        Assert.True(paused.IsServiceWide);
        Assert.False(both.IsPaused);
        Assert.True(both.Acquire(new Call("alice")).IsAcquired);
    }

    [Fact]
    public void Combine_ACombination_FlattensItsPolicies()
    {
        using RatePolicy<Call> service = Service(tokensPerDay: 1_000);
        using RatePolicy<Call> user = PerUser(perMinute: 2);
        using RatePolicy<Call> first = RatePolicy<Call>.Combine(service);
        using RatePolicy<Call> again = RatePolicy<Call>.Combine(first, user, service);

        Assert.Equal(["service tokens", "user", "user log"], again.LayerNames);
    }

    [Fact]
    public void Combine_BadArguments_ThrowWithoutChangingAnything()
    {
        using RatePolicy<Call> service = Service(tokensPerDay: 1_000);
        using RatePolicy<Call> user = PerUser(perMinute: 2);
        using RatePolicy<Call> otherClock = PerUser(perMinute: 2, new FakeTimeProvider());
        using RatePolicy<Call> sameNames = PerUser(perMinute: 5);

        Assert.Throws<ArgumentNullException>(() => RatePolicy<Call>.Combine(null!));
        Assert.Throws<ArgumentNullException>(() => RatePolicy<Call>.Combine(service, null!));
        Assert.Throws<ArgumentException>(() => RatePolicy<Call>.Combine());
        Assert.Contains("different TimeProviders", Assert.Throws<ArgumentException>(() => RatePolicy<Call>.Combine(service, otherClock)).Message, StringComparison.Ordinal);
        Assert.Contains("'user'", Assert.Throws<ArgumentException>(() => RatePolicy<Call>.Combine(user, sameNames)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Combination_ASourceDisposed_ThrowsObjectDisposed_AndItsOwnDisposeLeavesTheSourcesRunning()
    {
        using RatePolicy<Call> service = Service(tokensPerDay: 1_000);
        RatePolicy<Call> user = PerUser(perMinute: 2);
        RatePolicy<Call> both = RatePolicy<Call>.Combine(service, user);

        Assert.Throws<InvalidOperationException>(() => both.UpdateTiers(new PolicyTiers()));
        both.Dispose();
        Assert.True(user.Acquire(new Call("alice")).IsAcquired);

        using RatePolicy<Call> again = RatePolicy<Call>.Combine(service, user);
        user.Dispose();
        Assert.Throws<ObjectDisposedException>(() => again.Acquire(new Call("alice")));
        Assert.Throws<ObjectDisposedException>(() => again.GetUsage(new Call("alice")));
        Assert.Throws<ObjectDisposedException>(() => again.GetUsage(new Call("alice"), again.LayerNames[0]));
        Assert.Throws<ObjectDisposedException>(() => RatePolicy<Call>.Combine(service, user));
    }

    [Fact]
    public void Lease_ASourceDisposedBeforeItsReconcile_TheRunningPolicyKeepsTheEstimateCounted()
    {
        RatePolicy<Call> user = PerUser(perMinute: 10);
        using RatePolicy<Call> budget = new RatePolicyBuilder<Call>().UseTimeProvider(_time)
            .AddLayer("user $/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Money).RefundingUnreconciled())
            .Build();
        using RatePolicy<Call> both = RatePolicy<Call>.Combine(user, budget);
        var alice = new Call("alice");
        PolicyLease lease = both.Acquire(alice, new RequestCost(0, 500));
        Assert.True(lease.IsAcquired);

        user.Dispose();
        Assert.Throws<ObjectDisposedException>(() => lease.Reconcile(new RequestCost(0, 900)));
        lease.Dispose();

        // The stream may have cost anything: the budget still running must not forget the 500 it reserved.
        Assert.Equal(500, budget.GetUsage(alice, "user $/day").Used);
    }

    [Fact]
    public void GetTiersAndGetRule_DescribeThePolicy()
    {
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(_time)
            .UseTiers(call => call.Tier, new PolicyTiers { ["free"] = { ["user"] = 3 }, ["pro"] = { ["user"] = 30 } })
            .AddLayer("user", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)))
            .AddLayer("streams", call => call.User, PolicyRule.Concurrency(2))
            .Build();

        PolicyTiers tiers = policy.GetTiers();
        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["user"] = 4 } });

        Assert.Equal(3, tiers["free"]["user"]);
        Assert.Equal(30, tiers["pro"]["user"]);
        Assert.Equal(4, policy.GetTiers()["free"]["user"]);
        Assert.False(policy.GetTiers().TryGetLimit("pro", "user", out _));
        Assert.True(policy.GetRule("streams").IsConcurrency);
        Assert.False(policy.GetRule("user").IsCalendar);
        Assert.Throws<ArgumentException>(() => policy.GetRule("nope"));
    }
}
