using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Redis.Policies;
using RateEngine.Redis.Scripts;
using RateEngine.Redis.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>
/// The layered policy on a real Redis: every layer decided in one script, all or nothing; reconcile, step charges and
/// dispose settle every layer in one call; calendar periods and concurrency slots; several nodes on one policy.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class RedisRatePolicyTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 12, 2, 9, 0, 0, TimeSpan.Zero);

    private readonly RedisServer _server;
    private readonly ConnectionMultiplexer _connection;
    private readonly FakeTimeProvider _time = new(Start);
    private readonly string _prefix = "policy-" + Guid.NewGuid().ToString("N");

    public RedisRatePolicyTests(RedisServer server)
    {
        _server = server;
        _connection = server.Connect();
    }

    public void Dispose() => _connection.Dispose();

    [Fact]
    public async Task AcquireAsync_OneLayerRefuses_NoLayerCountsTheRequest()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        for (int i = 0; i < 2; i++)
        {
            (await policy.AcquireAsync(new Call("ann", "browse"), new RequestCost(100, 10))).Dispose();
        }

        IReadOnlyList<LayerUsage> before = await policy.GetUsageAsync(new Call("ann", "browse"));
        using PolicyLease refused = await policy.AcquireAsync(new Call("ann", "browse"), new RequestCost(100, 10));

        Assert.False(refused.IsAcquired);
        Assert.Equal("tool/min", refused.BlockingLayer);
        Assert.Equal(before, await policy.GetUsageAsync(new Call("ann", "browse")));
        Assert.Equal([2, 2, 0, 200, 20], before.Select(usage => usage.Used)); // the leases were disposed: their slots are free
        Assert.Equal(before, refused.UsageAtDecision); // the refusal reports the usage it saw, without another call

        using PolicyLease admitted = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(50, 5));
        Assert.Equal(await policy.GetUsageAsync(new Call("ann", "search")), admitted.UsageAtDecision); // as the admission left it
    }

    [Fact]
    public async Task AcquireAsync_Refusal_NamesTheFirstLayer_LongestRetryAfter_ServiceWideWhenAGlobalCapRefuses()
    {
        using RedisRatePolicy<Call> policy = Gateway(globalCents: 25);
        (await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(10, 20))).Dispose();

        using PolicyLease refused = await policy.AcquireAsync(new Call("bob", "search"), new RequestCost(10, 20));
        Assert.False(refused.IsAcquired);
        Assert.Equal("global cents/day", refused.BlockingLayer);
        Assert.True(refused.IsServiceWide);
        Assert.Equal(TimeSpan.FromHours(15), refused.RetryAfter); // 09:00 to midnight UTC
        Assert.True(refused.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.Equal("daily cost cap reached (global cents/day)", reason);
    }

    [Fact]
    public async Task ChargeAsync_WhoseOutcomeIsUnknown_CountsOnceOnTheLeaseAndOnRedis()
    {
        // A step charge past the estimate times out on a frozen server. It stays pending and is sent again with the lease's
        // next call; it counts on the lease at once, so settling at what was consumed counts it exactly once on Redis.
        using RedisRatePolicy<Call> policy = Gateway();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(100, 0));

        _server.Freeze();
        try
        {
            await Assert.ThrowsAnyAsync<Exception>(() => lease.ChargeAsync(new RequestCost(300, 0)).AsTask());
        }
        finally
        {
            _server.Thaw();
        }

        Assert.Equal(new RequestCost(300, 0), lease.Consumed);
        Assert.Equal(new RequestCost(200, 0), await lease.ReconcileAsync(lease.Consumed));
        lease.Dispose();
        Assert.Equal(300, (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "tokens/day").Used);
    }

    [Fact]
    public async Task Reconcile_TheSettleMarker_LivesMinutesNotAsLongAsTheBudgets()
    {
        // One marker per lease that settled anything: kept as long as a daily budget, a busy policy would keep millions in
        // its one cluster slot. It lives SettleMemoryMilliseconds; a lease sends a refund again only well within that.
        using RedisRatePolicy<Call> policy = Gateway();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(400, 30));
        lease.Reconcile(new RequestCost(120, 12));
        lease.Dispose();

        IServer server = _connection.GetServer(_connection.GetEndPoints()[0]);
        RedisKey marker = server.Keys(pattern: $"*{_prefix}*settle*").First();
        TimeSpan? markerLife = await _connection.GetDatabase().KeyTimeToLiveAsync(marker);
        Assert.InRange(markerLife!.Value, RedisPolicyLease<Call>.ReplayBound, TimeSpan.FromMilliseconds(PolicyScripts.SettleMemoryMilliseconds));
        Assert.Contains($"'PX', {PolicyScripts.SettleMemoryMilliseconds})", PolicyScripts.Settle, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Settle_ReplayedAfterTheScriptMayHaveForgottenIt_IsSentWithoutItsRefunds()
    {
        // A reconcile that landed but whose reply was lost is sent again with the lease's next call. Past the replay bound
        // the script may have forgotten it (here its marker is deleted): sent as it was, it would refund a second time.
        using RedisRatePolicy<Call> policy = Gateway();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(400, 30));
        await ((RedisPolicyLease<Call>)lease).ReconcileWithReplyLostAsync(new RequestCost(100, 10));
        Assert.Equal(100, await TokensUsed());

        _time.Advance(RedisPolicyLease<Call>.ReplayBound);
        IServer server = _connection.GetServer(_connection.GetEndPoints()[0]);
        await _connection.GetDatabase().KeyDeleteAsync([.. server.Keys(pattern: $"*{_prefix}*settle*")]);
        lease.Dispose(); // sends the pending reconcile again, then the slot's release

        for (int attempt = 0; attempt < 250 && (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "streams").Used != 0; attempt++)
        {
            await Task.Delay(20); // the dispose settles in the background
        }

        Assert.Equal(0, (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "streams").Used);
        Assert.Equal(100, await TokensUsed()); // not refunded twice

        async Task<long> TokensUsed() => (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "tokens/day").Used;
    }

    [Fact]
    public async Task ConcurrencySlot_ExpiredWhileRenewalsWereLost_IsAddedBackByTheNextRenewal()
    {
        // Redis away for longer than the lease timeout: the open stream's slot expired there. Once renewals get through
        // again it must count again, or the cap's worth of new streams would be admitted beside the ones still open.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("streams", call => call.User, PolicyRule.Concurrency(1))
            .WithLeaseTimeout(TimeSpan.FromSeconds(3))
            .Build();
        using PolicyLease stream = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(stream.IsAcquired);
        IDatabase database = _connection.GetDatabase();
        RedisKey slots = _connection.GetServer(_connection.GetEndPoints()[0]).Keys(pattern: $"*{_prefix}*streams*").Single();
        RedisValue member = (await database.SortedSetRangeByRankAsync(slots)).Single();
        await database.SortedSetAddAsync(slots, member, (Start.ToUnixTimeMilliseconds() * 1_000.0) - 1); // expired there

        _time.Advance(TimeSpan.FromSeconds(1)); // the next renewal
        for (int attempt = 0; attempt < 250 && (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used == 0; attempt++)
        {
            await Task.Delay(20); // the renewal's script call is under way
        }

        using PolicyLease second = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.False(second.IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_TiersSwappedWhileTheRequestReadsItsLimits_IsDecidedOnOneVersion()
    {
        // Tier t gives layer a 100 and b 50, then a 50 and b 100; both hold 60, so neither version admits another token.
        // The update lands while the request reads its limits (b's tier selector runs it), after a's and before b's: read
        // layer by layer, a's old limit and b's new one admitted what neither version does.
        var before = new PolicyTiers { ["t"] = { ["a"] = 100, ["b"] = 50 }, ["big"] = { ["a"] = 1_000, ["b"] = 1_000 } };
        var after = new PolicyTiers { ["t"] = { ["a"] = 50, ["b"] = 100 }, ["big"] = { ["a"] = 1_000, ["b"] = 1_000 } };
        bool armed = false;
        RedisRatePolicy<Call>? policy = null;
        policy = Builder()
            .UseTiers(call => call.Tool, before)
            .AddLayer("a", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1)).Counting(PolicyMeter.Tokens))
            .AddLayer("b", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1)).Counting(PolicyMeter.Tokens), call =>
            {
                if (armed)
                {
                    armed = false;
                    policy!.UpdateTiers(after);
                }

                return call.Tool;
            })
            .Build();
        using (policy)
        {
            using PolicyLease filled = await policy.AcquireAsync(new Call("ann", "big"), new RequestCost(60, 0));
            Assert.True(filled.IsAcquired);

            armed = true;
            using PolicyLease mixed = await policy.AcquireAsync(new Call("ann", "t"), new RequestCost(1, 0));

            Assert.False(armed); // the update ran in the middle of the request's reads
            Assert.False(mixed.IsAcquired);
            Assert.Equal("a", mixed.BlockingLayer); // decided on the new tiers
            Assert.Equal([60, 60], (await policy.GetUsageAsync(new Call("ann", "t"))).Select(layer => layer.Used));
        }
    }

    [Fact]
    public async Task ConcurrencySlot_SeenFromANodeASecondAhead_StillCountsBetweenRenewals()
    {
        // Node B's client clock runs 0.8 s ahead of node A's (within the second the nodes' clocks may differ), the lease
        // timeout is 1 s. B compares A's slot expiry with its own now: without a margin it saw the slot expired 0.2 s after
        // A took it, before A's first renewal (a third of the timeout), and admitted a second stream beside A's.
        var behind = new FakeTimeProvider(Start);
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromMilliseconds(800));
        RedisRatePolicy<Call> Node(FakeTimeProvider clock) => new RedisRatePolicyBuilder<Call>(Options().With(o => { o.ClientClock = clock; o.TimeProvider = clock; }))
            .AddGlobalLayer("streams", PolicyRule.Concurrency(1))
            .WithLeaseTimeout(TimeSpan.FromSeconds(1))
            .Build();
        using RedisRatePolicy<Call> a = Node(behind);
        using RedisRatePolicy<Call> b = Node(ahead);
        using PolicyLease stream = await a.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(stream.IsAcquired);

        behind.Advance(TimeSpan.FromMilliseconds(250)); // before A's first renewal, at a third of the timeout
        ahead.Advance(TimeSpan.FromMilliseconds(250));
        using PolicyLease second = await b.AcquireAsync(new Call("bob", "y"), RequestCost.None);

        Assert.False(second.IsAcquired);
    }

    [Fact]
    public async Task ConcurrencySlot_OfALeaseOpenLongerThanTheLeaseTimeout_IsRenewedAndStillCounts()
    {
        // A stream that outlasts the lease timeout must keep its slot (the timeout is for a node that dies with the lease
        // open): an expired slot would let a second stream in past the cap of one.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("streams", call => call.User, PolicyRule.Concurrency(1))
            .WithLeaseTimeout(TimeSpan.FromSeconds(2))
            .Build();
        using PolicyLease stream = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(stream.IsAcquired);

        // The slot counts until the timeout plus the clocks' second of margin: 3 s, then 4 s after the renewal at 1 s.
        _time.Advance(TimeSpan.FromSeconds(1));
        for (int attempt = 0; attempt < 50 && await SlotExpiresAt() <= 3_000_000; attempt++)
        {
            await Task.Delay(20); // the renewal's script call is under way
        }

        _time.Advance(TimeSpan.FromMilliseconds(2_500)); // 3.5 s: past the first expiry, before the renewed one
        using PolicyLease second = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.False(second.IsAcquired);

        stream.Dispose();
        for (int attempt = 0; attempt < 250 && (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used != 0; attempt++)
        {
            await Task.Delay(20);
        }

        using PolicyLease after = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(after.IsAcquired);

        async Task<double> SlotExpiresAt()
        {
            IServer server = _connection.GetServer(_connection.GetEndPoints()[0]);
            RedisKey slots = server.Keys(pattern: $"*{_prefix}*").First(key => !key.ToString().Contains("settle", StringComparison.Ordinal));
            SortedSetEntry[] members = await _connection.GetDatabase().SortedSetRangeByRankWithScoresAsync(slots);
            return members.Length == 0 ? 0 : members[0].Score - (Start.ToUnixTimeMilliseconds() * 1_000.0);
        }
    }

    [Fact]
    public async Task Reconcile_BelowTheEstimate_RefundsEveryWeightedLayer_AboveChargesTheOverrunPastTheCap()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(400, 30));
        Assert.Equal(RequestCost.None, lease.Reconcile(new RequestCost(120, 12)));
        lease.Dispose();
        IReadOnlyList<LayerUsage> usage = await policy.GetUsageAsync(new Call("ann", "search"));
        Assert.Equal(120, usage.Single(layer => layer.Layer == "tokens/day").Used);
        Assert.Equal(12, usage.Single(layer => layer.Layer == "global cents/day").Used);
        Assert.Equal(1, usage.Single(layer => layer.Layer == "user/min").Used); // requests stay counted

        PolicyLease big = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(500, 10));
        Assert.Equal(new RequestCost(1_500, 0), big.Reconcile(new RequestCost(2_000, 10))); // 120 + 2,000 > the 1,000 cap
        Assert.Throws<InvalidOperationException>(() => big.Reconcile(new RequestCost(1, 1)));
        big.Dispose();
        Assert.Equal(2_120, (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "tokens/day").Used);

        using PolicyLease refused = await policy.AcquireAsync(new Call("ann", "translate"), new RequestCost(1, 1));
        Assert.Equal("tokens/day", refused.BlockingLayer); // the overrun was spent: it counts
    }

    [Fact]
    public async Task Charge_StepsPastTheEstimate_AreOverrunAtOnce_ThenReconcileSettlesAtTheActual()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(100, 0));
        lease.Charge(new RequestCost(60, 0));
        lease.Charge(new RequestCost(60, 0)); // 20 past the estimate
        Assert.Equal(120, (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "tokens/day").Used);
        Assert.Equal(new RequestCost(20, 0), lease.Reconcile());
        lease.Dispose();
        Assert.Equal(120, (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "tokens/day").Used);
    }

    [Fact]
    public async Task ReconcileConsumedAsync_SettlesAtWhatTheStepsCharged_AndTheLeaseIsSettled()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "search"), new RequestCost(100, 0));
        await lease.ChargeAsync(new RequestCost(60, 0));
        await lease.ChargeAsync(new RequestCost(60, 0)); // 20 past the estimate
        Assert.False(lease.IsSettled);

        Assert.Equal(new RequestCost(20, 0), await lease.ReconcileConsumedAsync());

        Assert.True(lease.IsSettled);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await lease.ReconcileConsumedAsync());
        lease.Dispose();
        Assert.Equal(120, (await policy.GetUsageAsync(new Call("ann", "search"))).Single(layer => layer.Layer == "tokens/day").Used);
    }

    [Fact]
    public async Task Dispose_FreesTheConcurrencySlot_AndASlotNeverReleasedExpiresAtTheLeaseTimeout()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        PolicyLease first = await policy.AcquireAsync(new Call("ann", "stream"), RequestCost.None);
        using PolicyLease second = await policy.AcquireAsync(new Call("ann", "stream"), RequestCost.None);
        Assert.Equal("streams", second.BlockingLayer);
        Assert.Null(second.RetryAfter); // a slot comes back when a stream ends, which nobody knows: no Retry-After of the timeout

        first.Dispose();
        RedisRatePolicy<Call> node2 = Gateway(); // another node, on the same keys
        PolicyLease third = await node2.AcquireAsync(new Call("ann", "stream"), RequestCost.None);
        Assert.True(third.IsAcquired);

        // The node holding `third` dies (no release, no more renewals): its slot comes back when the lease timeout and the
        // nodes' clock margin of a second have passed, not before.
        node2.Dispose();
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.False((await policy.AcquireAsync(new Call("ann", "stream"), RequestCost.None)).IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True((await policy.AcquireAsync(new Call("ann", "stream"), RequestCost.None)).IsAcquired);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AcquireAsync_AFullConcurrencyLayerRefusesWithAWindowLayer_PromisesNoRetryAfter(bool concurrencyFirst)
    {
        // The window frees in a second, the slot when the stream ends: a Retry-After of a second would be short.
        RedisRatePolicyBuilder<Call> builder = Builder();
        builder = concurrencyFirst ? builder.AddLayer("streams", call => call.User, PolicyRule.Concurrency(1)) : builder;
        builder = builder.AddLayer("user", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1));
        builder = concurrencyFirst ? builder : builder.AddLayer("streams", call => call.User, PolicyRule.Concurrency(1));
        using RedisRatePolicy<Call> policy = builder.Build();
        using PolicyLease stream = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(stream.IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(59)); // Start is on a minute: the window ends in a second

        using PolicyLease refused = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);

        Assert.Equal(concurrencyFirst ? "streams" : "user", refused.BlockingLayer);
        Assert.Null(refused.RetryAfter);
        Assert.Equal(TimeSpan.FromSeconds(1), refused.MinimumRetryAfter); // not sooner than the window: a lower bound
    }

    [Fact]
    public async Task AcquireAsync_DailyBudgetInATimeZone_ResetsAtLocalMidnight()
    {
        TimeZoneInfo plusTwo = TimeZoneInfo.CreateCustomTimeZone("Test+2", TimeSpan.FromHours(2), "Test+2", "Test+2");
        using RedisRatePolicy<Call> policy = Builder().AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100, plusTwo).Counting(PolicyMeter.Tokens)).Build();
        (await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0))).Dispose();
        using PolicyLease refused = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 0));
        Assert.Equal(TimeSpan.FromHours(13), refused.RetryAfter); // 11:00 local to midnight local

        _time.Advance(TimeSpan.FromHours(13) - TimeSpan.FromTicks(10));
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 0))).IsAcquired);
        _time.Advance(TimeSpan.FromTicks(10));
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0))).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_Tiers_EachRequestGetsItsTiersLimit()
    {
        var tiers = new PolicyTiers { ["free"] = { ["requests/min"] = 2 }, ["pro"] = { ["requests/min"] = 4 } };
        using RedisRatePolicy<Call> policy = Builder()
            .UseTiers(call => call.Tool, tiers)
            .AddLayer("requests/min", call => call.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6))
            .Build();
        int free = 0;
        int pro = 0;
        for (int i = 0; i < 6; i++)
        {
            free += (await policy.AcquireAsync(new Call("ann", "free"), RequestCost.None)).IsAcquired ? 1 : 0;
            pro += (await policy.AcquireAsync(new Call("bob", "pro"), RequestCost.None)).IsAcquired ? 1 : 0;
        }

        Assert.Equal((2, 4), (free, pro));
        using PolicyLease unknown = await policy.AcquireAsync(new Call("carl", "gold"), RequestCost.None);
        Assert.Equal("No limit is set for this request's tier on layer 'requests/min'.", unknown.Reason);
        Assert.True(unknown.IsPermanentRefusal);
    }

    [Fact]
    public async Task BadInput_FailsClearly_AndCountsNothing()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(-1, 0)));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await policy.AcquireAsync(new Call(null!, "x"), RequestCost.None));
        using PolicyLease tooBig = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(1_001, 0));
        Assert.Equal("tokens/day", tooBig.BlockingLayer);
        Assert.Contains("above the cap", tooBig.Reason, StringComparison.Ordinal);
        Assert.True(tooBig.IsPermanentRefusal);
        Assert.Throws<InvalidOperationException>(() => tooBig.Reconcile(RequestCost.None));
        Assert.All(await policy.GetUsageAsync(new Call("ann", "x")), usage => Assert.Equal(0, usage.Used));

        RedisLimiterOptions localFallback = Options();
        localFallback.FailureMode = RedisFailureMode.LocalFallback;
        localFallback.LocalFallbackShare = 0.5;
        Assert.Throws<ArgumentException>(() => new RedisRatePolicyBuilder<Call>(localFallback).AddGlobalLayer("g", PolicyRule.FixedWindow(TimeSpan.FromSeconds(1), 1)).Build());
        Assert.Throws<ArgumentException>(() => Builder().AddGlobalLayer("g", PolicyRule.FixedWindow(TimeSpan.FromSeconds(1), 1)).AddGlobalLayer("g", PolicyRule.Concurrency(1)));
        Assert.Throws<ArgumentException>(() => Builder().AddGlobalLayer("pause", PolicyRule.Concurrency(1))); // names in refusals: the pause, an outage
        Assert.Throws<ArgumentException>(() => Builder().AddGlobalLayer("redis", PolicyRule.Concurrency(1)));
        Assert.Throws<ArgumentException>(() => Builder().AddGlobalLayer("soft", PolicyRule.Calendar(CalendarPeriod.Day, 10).AsSoft(0.5)).Build());
        policy.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None));
    }

    [Fact]
    public async Task AcquireAsync_FourNodesHammerOnePolicy_EveryCapHolds_AndEveryLayerCountsExactlyTheAdmitted()
    {
        // Four nodes (each its own connection and policy object) and 8 callers each, deciding at one instant of a shared
        // client clock, so that nothing resets during the run and each cap is a hard total (on the server's clock, a run
        // across the hour or midnight would reset the windows and fail the totals).
        const int Users = 5;
        const int UserCap = 30;
        const int GlobalCap = 100;
        var nodes = Enumerable.Range(0, 4).Select(_ => _server.Connect()).ToArray();
        var policies = nodes.Select(node => new RedisRatePolicyBuilder<Call>(new RedisLimiterOptions { Connection = node, KeyPrefix = _prefix, ClientClock = _time, SyncTimeout = TimeSpan.FromSeconds(5) })
            .AddLayer("user/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), UserCap))
            .AddLayer("user tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 400).Counting(PolicyMeter.Tokens))
            .AddGlobalLayer("global/hour", PolicyRule.SlidingWindowCounter(TimeSpan.FromHours(1), 4, GlobalCap))
            .Build()).ToArray();
        (int[] admitted, long[] tokens) = await PolicyLoad.HammerAsync<Call>(policies, user => new Call(user, "x"), Users, attemptsPerCaller: 40);

        Assert.True(admitted.Sum() <= GlobalCap, $"{admitted.Sum()} admitted past the global cap of {GlobalCap}");
        Assert.Equal(GlobalCap, admitted.Sum()); // 1,280 attempts on 5 users of 30: the global cap is reached
        for (int user = 0; user < Users; user++)
        {
            Assert.True(admitted[user] <= UserCap, $"u{user}: {admitted[user]} admitted past {UserCap}");
            IReadOnlyList<LayerUsage> usage = await policies[0].GetUsageAsync(new Call($"u{user}", "x"));
            Assert.Equal(admitted[user], usage[0].Used); // no refused request left a count on the user layer
            Assert.Equal(tokens[user], usage[1].Used); // every reconcile landed exactly
            Assert.Equal(admitted.Sum(), usage[2].Used);
        }

        foreach (ConnectionMultiplexer node in nodes)
        {
            node.Dispose();
        }
    }

    [Fact]
    public async Task AcquireAsync_LayerWindowNotAWholeMicrosecond_IsRoundedUpNotDown()
    {
        // As the limiter's scripts: a log layer of 1 s + 0.5 µs counts a request for the whole of it.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("user log", call => call.User, PolicyRule.SlidingWindowLog(TimeSpan.FromTicks(10_000_005), 1))
            .Build();

        using (PolicyLease first = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None))
        {
            Assert.True(first.IsAcquired);
        }

        _time.Advance(TimeSpan.FromSeconds(1));
        using (PolicyLease inside = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None))
        {
            Assert.False(inside.IsAcquired);
        }

        _time.Advance(TimeSpan.FromTicks(10));
        using PolicyLease after = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(after.IsAcquired);
    }

    [Theory]
    [InlineData("log")]
    [InlineData("counter")]
    public async Task AcquireAsync_NodeClockAheadThenOneBehind_TheKeysTimeNeverGoesBack(string kind)
    {
        // A node whose clock is an hour ahead drops what the others counted an hour before, as over. A node on time then
        // decides at the key's later time (the log's newest permit, the counter's latest segment), so what it admits is not
        // counted in the earlier window, which the fast node would drop again: 3 + 2 + 1 + 2 in one minute of its clock.
        PolicyRule rule = kind == "log" ? PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), 3) : PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 3);
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromHours(1));
        using RedisRatePolicy<Call> onTime = Builder().AddLayer("user/min", call => call.User, rule).Build();
        using RedisRatePolicy<Call> fast = new RedisRatePolicyBuilder<Call>(Options().With(o => o.ClientClock = ahead)).AddLayer("user/min", call => call.User, rule).Build();
        var ann = new Call("ann", "x");
        for (int i = 0; i < 3; i++)
        {
            Assert.True((await onTime.AcquireAsync(ann, RequestCost.None)).IsAcquired);
        }

        Assert.True((await fast.AcquireAsync(ann, RequestCost.None)).IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(2));
        int admitted = 0;
        for (int i = 0; i < 2; i++)
        {
            admitted += (await onTime.AcquireAsync(ann, RequestCost.None)).IsAcquired ? 1 : 0;
        }

        ahead.Advance(TimeSpan.FromSeconds(3));
        int admittedAhead = 0;
        for (int i = 0; i < 3; i++)
        {
            admittedAhead += (await fast.AcquireAsync(ann, RequestCost.None)).IsAcquired ? 1 : 0;
        }

        Assert.Equal(2, admitted);
        Assert.Equal(3 - 1 - admitted, admittedAhead); // the fast node's minute holds 3 in all
    }

    [Theory]
    [InlineData("window")]
    [InlineData("day")]
    public async Task AcquireAsync_KeyCountsAWindowTwoAheadOfTheCaller_RetryAfterReachesThatWindow(string kind)
    {
        // A node whose clock is two windows (days) ahead counted the key in its window. A node on time is refused until its
        // clock reaches that window, which is a whole window past the end of its own: a Retry-After that ends with its own
        // window would send it back to be refused again.
        bool window = kind == "window";
        PolicyRule rule = window ? PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 3) : PolicyRule.Calendar(CalendarPeriod.Day, 3);
        var ahead = new FakeTimeProvider(Start + (window ? TimeSpan.FromMinutes(2) : TimeSpan.FromDays(2)));
        using RedisRatePolicy<Call> onTime = Builder().AddLayer("user", call => call.User, rule).Build();
        using RedisRatePolicy<Call> fast = new RedisRatePolicyBuilder<Call>(Options().With(o => o.ClientClock = ahead)).AddLayer("user", call => call.User, rule).Build();
        var ann = new Call("ann", "x");
        Assert.True((await fast.AcquireAsync(ann, RequestCost.None)).IsAcquired);

        using PolicyLease refused = await onTime.AcquireAsync(ann, RequestCost.None);

        Assert.False(refused.IsAcquired);
        Assert.Equal(window ? TimeSpan.FromMinutes(2) : TimeSpan.FromHours(15 + 24), refused.RetryAfter);
    }

    [Fact]
    public async Task AcquireAsync_LaterSegmentRefundedToZero_IsStillTheKeysTime()
    {
        // The fast node's acquire dropped the earlier segment; its reconcile at 0 emptied its own. A node on time must still
        // decide in that later segment: on its own clock it would count 3 more in the minute that already holds 3.
        PolicyRule rule = PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 3).Counting(PolicyMeter.Tokens);
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromHours(1));
        using RedisRatePolicy<Call> onTime = Builder().AddLayer("tokens/min", call => call.User, rule).Build();
        using RedisRatePolicy<Call> fast = new RedisRatePolicyBuilder<Call>(Options().With(o => o.ClientClock = ahead)).AddLayer("tokens/min", call => call.User, rule).Build();
        var ann = new Call("ann", "x");
        var three = new RequestCost(3, 0);
        Assert.True((await onTime.AcquireAsync(ann, three)).IsAcquired);
        using (PolicyLease refunded = await fast.AcquireAsync(ann, three))
        {
            Assert.True(refunded.IsAcquired);
            await refunded.ReconcileAsync(RequestCost.None);
        }

        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.True((await onTime.AcquireAsync(ann, three)).IsAcquired); // counted in the fast node's segment
        ahead.Advance(TimeSpan.FromSeconds(3));

        Assert.False((await fast.AcquireAsync(ann, new RequestCost(1, 0))).IsAcquired);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Pause_OnOneNode_RefusesServiceWideOnEveryNodeUntilResumed(bool async)
    {
        using RedisRatePolicy<Call> node1 = Gateway();
        using ConnectionMultiplexer otherConnection = _server.Connect();
        using RedisRatePolicy<Call> node2 = new RedisRatePolicyBuilder<Call>(new RedisLimiterOptions { Connection = otherConnection, KeyPrefix = _prefix, ClientClock = _time, SyncTimeout = TimeSpan.FromSeconds(2) })
            .AddLayer("user/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 20))
            .Build();

        if (async)
        {
            await node1.PauseAsync("incident 42");
        }
        else
        {
            node1.Pause("incident 42");
        }

        Assert.True(node1.IsPaused);
        using PolicyLease refused = await node2.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.False(refused.IsAcquired);
        Assert.True(refused.IsServiceWide);
        Assert.Equal("pause", refused.BlockingLayer);
        Assert.Equal("incident 42", refused.Reason);
        Assert.True(node2.IsPaused);
        Assert.Equal(0, (await node2.GetUsageAsync(new Call("ann", "x")))[0].Used); // a paused request counts nowhere

        if (async)
        {
            await node2.ResumeAsync();
        }
        else
        {
            node2.Resume();
        }

        using PolicyLease admitted = await node1.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(admitted.IsAcquired);
        Assert.False(node1.IsPaused);
        Assert.Throws<ArgumentException>(() => node1.Pause(" "));
        await Assert.ThrowsAsync<ArgumentException>(async () => await node1.PauseAsync(" "));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await node1.PauseAsync("late", new CancellationToken(canceled: true)));
    }

    [Fact]
    public async Task UpdateTiers_UnderWay_TakesEffectAtTheNextDecision_KeepingUsage()
    {
        var tiers = new PolicyTiers { ["free"] = { ["requests/min"] = 2 } };
        using RedisRatePolicy<Call> policy = Builder()
            .UseTiers(_ => "free", tiers)
            .AddLayer("requests/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)))
            .Build();
        (await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).Dispose();
        (await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).Dispose();
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);

        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["requests/min"] = 3 } });
        Assert.Equal(3, policy.GetTiers()["free"]["requests/min"]);
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired); // the 2 already counted stay
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        Assert.Throws<ArgumentException>(() => policy.UpdateTiers(new PolicyTiers { ["free"] = { ["nope"] = 3 } }));
        using RedisRatePolicy<Call> fixedLimit = Builder().AddLayer("burst", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10)).Build();
        Assert.Throws<ArgumentException>(() => fixedLimit.UpdateTiers(new PolicyTiers { ["free"] = { ["burst"] = 3 } })); // its rule's limit would win
        Assert.Throws<ArgumentOutOfRangeException>(() => policy.UpdateTiers(new PolicyTiers { ["free"] = { ["requests/min"] = 1L << 54 } }));
    }

    [Theory]
    [InlineData("u:k1")]
    [InlineData("{u}")]
    public void AddLayer_NameWithAKeySeparatorOrBrace_Throws(string name)
    {
        // The name is part of the layer's Redis keys ({prefix}:name:shape:key): "u" with the key "k1-...:bob" and "u:k1-..."
        // with the key "bob" would be one key, counted by both layers.
        Assert.Throws<ArgumentException>(() => Builder().AddLayer(name, call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10)));
    }

    [Fact]
    public void Build_OptionsChangedAfterwards_TheBuiltPolicyKeepsItsOwn()
    {
        // One options object reused with another key prefix for the next policy: the first keeps its prefix (its settles
        // and its Combine checks read its own copy), so the two no longer pass for policies of one key prefix.
        RedisLimiterOptions options = Options();
        using RedisRatePolicy<Call> first = new RedisRatePolicyBuilder<Call>(options)
            .AddLayer("a", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .Build();
        options.KeyPrefix = _prefix + "-other";
        using RedisRatePolicy<Call> second = new RedisRatePolicyBuilder<Call>(options)
            .AddLayer("b", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .Build();

        Assert.Throws<ArgumentException>(() => first.Combine([second]));
    }

    [Fact]
    public void Build_LogLayerAboveTheRedisBound_Throws()
    {
        int most = RedisLimiter.MaxSlidingWindowLogPermitLimit;
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => Builder()
            .AddLayer("log", call => call.User, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), limit: most + 1))
            .Build());
        Assert.Contains("one member per request", error.Message, StringComparison.Ordinal);

        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("log", call => call.User, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), limit: most))
            .Build();
    }

    [Fact]
    public async Task UpdateTiers_CallerChangesItsObjectLater_ThePolicyKeepsWhatItWasGiven()
    {
        var built = new PolicyTiers { ["free"] = { ["requests/min"] = 1 } };
        using RedisRatePolicy<Call> policy = Builder()
            .UseTiers(_ => "free", built)
            .AddLayer("requests/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)))
            .Build();
        built["free"]["requests/min"] = 100;
        (await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).Dispose();
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);

        var updated = new PolicyTiers { ["free"] = { ["requests/min"] = 2 } };
        policy.UpdateTiers(updated);
        updated["free"]["requests/min"] = 100;

        Assert.Equal(2, policy.GetTiers()["free"]["requests/min"]);
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
    }

    [Fact]
    public async Task Combine_GlobalAndEndpointPolicies_DecidedTogether_AllOrNothing()
    {
        using RedisRatePolicy<Call> global = Builder().AddGlobalLayer("global/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 3)).Build();
        using RedisRatePolicy<Call> endpoint = Builder().AddLayer("user/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1)).Build();
        IRatePolicy<Call> both = global.Combine([endpoint]);
        Assert.Equal(["global/min", "user/min"], both.LayerNames);

        Assert.True((await both.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        using PolicyLease refused = await both.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.Equal("user/min", refused.BlockingLayer);
        Assert.Equal(1, (await global.GetUsageAsync(new Call("ann", "x")))[0].Used); // the refusal took nothing from the global layer
        Assert.Throws<InvalidOperationException>(() => both.UpdateTiers(new PolicyTiers()));

        using ConnectionMultiplexer other = _server.Connect();
        using RedisRatePolicy<Call> elsewhere = new RedisRatePolicyBuilder<Call>(new RedisLimiterOptions { Connection = other, KeyPrefix = _prefix })
            .AddGlobalLayer("other", PolicyRule.Concurrency(1)).Build();
        Assert.Throws<ArgumentException>(() => global.Combine([elsewhere]));
        Assert.Throws<ArgumentException>(() => global.Combine([global]));
    }

    [Theory]
    [InlineData("database")]
    [InlineData("clock")]
    [InlineData("time provider")]
    [InlineData("failure mode")]
    public void Combine_APolicyThatDecidesDifferently_Throws(string difference)
    {
        // The combined policy decides with the first one's options: a layer of another database would be counted in two
        // places (its cap held in each, so twice over), one on another clock would mix two clocks on its keys, and one that
        // fails closed would fail open.
        using RedisRatePolicy<Call> global = Builder().AddGlobalLayer("global/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 3)).Build();
        RedisLimiterOptions options = Options();
        switch (difference)
        {
            case "database": options.Database = 1; break;
            case "clock": options.ClientClock = null; break;
            case "time provider": options.TimeProvider = new FakeTimeProvider(); break; // a hybrid combination times blocks on the first's
            default: options.FailureMode = RedisFailureMode.FailOpen; break;
        }

        using RedisRatePolicy<Call> tool = new RedisRatePolicyBuilder<Call>(options)
            .AddLayer("tool/min", call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .Build();

        Assert.Throws<ArgumentException>(() => global.Combine([tool]));
    }

    [Fact]
    public void Combine_TheDefaultDatabaseNamedOrNot_AndAnotherSyncTimeout_Combine()
    {
        // Database -1 is the connection's default, 0 here: the same keys. A sync timeout only bounds how long a caller
        // waits; it changes nothing that is counted.
        using RedisRatePolicy<Call> global = Builder().AddGlobalLayer("global/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 3)).Build();
        RedisLimiterOptions options = Options();
        options.Database = 0;
        options.SyncTimeout = TimeSpan.FromSeconds(3);
        using RedisRatePolicy<Call> tool = new RedisRatePolicyBuilder<Call>(options)
            .AddLayer("tool/min", call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .Build();

        Assert.Equal(["global/min", "tool/min"], global.Combine([tool]).LayerNames);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileTheScriptWaits_AnAdmissionNobodyHoldsIsRolledBack()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        using (ConnectionMultiplexer admin = _server.Connect(admin: true))
        {
            // The server holds scripts for a second (long enough on a loaded machine): the caller gives up at 50 ms, the
            // script still runs (and admits) later.
            await admin.GetServer(_server.Endpoint).ExecuteAsync("CLIENT", "PAUSE", "1000", "WRITE");
            using var soon = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await policy.AcquireAsync(new Call("ann", "stream"), new RequestCost(300, 30), soon.Token));
        }

        IReadOnlyList<LayerUsage> usage = [];
        for (int attempt = 0; attempt < 200; attempt++)
        {
            await Task.Delay(20);
            usage = await policy.GetUsageAsync(new Call("ann", "stream"));
            if (usage.Single(layer => layer.Layer == "streams").Used == 0 && usage.Single(layer => layer.Layer == "user/min").Used == 0)
            {
                break;
            }
        }

        Assert.All(usage, layer => Assert.Equal(0, layer.Used)); // the slot, the request and the estimate all came back
        using PolicyLease next = await policy.AcquireAsync(new Call("ann", "stream"), RequestCost.None);
        Assert.True(next.IsAcquired); // the one slot is free: an abandoned acquire did not hold it until the lease timeout
    }

    [Fact]
    public async Task SettleScript_SentTwiceWithOneSequenceNumber_AppliesOnce()
    {
        // What a lease does after a lost reply (the server ran the settle, the client never heard): it sends the same
        // settle again. Driven here at the script, since a reply cannot be lost on demand.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        (await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0))).Dispose();
        RedisKey key = policy[0].KeyOf(new Call("ann", "x"));
        long periodStart = new DateTimeOffset(_time.GetUtcNow().UtcDateTime.Date, TimeSpan.Zero).ToUnixTimeMilliseconds() * 1_000;

        RedisValue[] Refund(string leaseAndSequence)
        {
            var values = new RedisValue[2 + PolicyScripts.Stride];
            values[0] = (_time.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks / 10;
            values[1] = leaseAndSequence;
            policy[0].WriteArguments(values, 2, limit: 1_000, amount: -300, tag: periodStart, (long)values[0]);
            return values;
        }

        RedisKey[] keys = [key, $"{{{_prefix}}}:settle:lease-1"];
        IDatabase database = _connection.GetDatabase();
        await database.ScriptEvaluateAsync(PolicyScripts.Settle, keys, Refund("lease-1#1"));
        await database.ScriptEvaluateAsync(PolicyScripts.Settle, keys, Refund("lease-1#1")); // the same settle again
        Assert.Equal(100, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);

        await database.ScriptEvaluateAsync(PolicyScripts.Settle, keys, Refund("lease-1#2")); // the lease's next settle counts
        Assert.Equal(0, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
    }

    [Fact]
    public async Task ReconcileAsync_BucketKeyExpiredAndTakenAgainInTheSameMicrosecond_RefundsNothingIntoTheNewState()
    {
        // A bucket's refund is exact only for the key's last admission, which its tag names. A key that expired starts its
        // tags from the clock again, so a later lease can take an earlier one's tag (here, the same microsecond on one
        // clock; across nodes, a clock that was ahead): the earlier lease's refund must not give its tokens to that state.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens", call => call.User, PolicyRule.TokenBucket(100, 10, TimeSpan.FromSeconds(1)).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        using PolicyLease first = await policy.AcquireAsync(ann, new RequestCost(30, 0));
        Assert.True(first.IsAcquired);
        await _connection.GetDatabase().KeyDeleteAsync(policy[0].KeyOf(ann)); // as its TTL would
        using PolicyLease second = await policy.AcquireAsync(ann, new RequestCost(20, 0));
        Assert.True(second.IsAcquired);

        await first.ReconcileAsync(RequestCost.None);

        Assert.Equal(20, (await policy.GetUsageAsync(ann))[0].Used);
        await second.ReconcileAsync(new RequestCost(5, 0)); // the key's last admission: its refund is exact
        Assert.Equal(5, (await policy.GetUsageAsync(ann))[0].Used);
    }

    [Fact]
    public async Task AcquireAsync_DayKeyCountsAStartBetweenTheCallersMidnightAndNow_RetryAfterIsTheCallersMidnight()
    {
        // Two nodes whose time-zone rules differ place one day's start differently; the key holds the other node's start,
        // after this node's midnight but before its now (01:00 against 09:00). The wait is until this node's day ends, not
        // a negative time until a start already past.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        long otherStart = (Start - TimeSpan.FromHours(8) - DateTimeOffset.UnixEpoch).Ticks / 10;
        await _connection.GetDatabase().HashSetAsync(policy[0].KeyOf(ann), [new HashEntry("p", otherStart), new HashEntry("u", 100)]);

        using PolicyLease refused = await policy.AcquireAsync(ann, new RequestCost(1, 0));

        Assert.False(refused.IsAcquired);
        Assert.Equal(TimeSpan.FromHours(15), refused.RetryAfter);
    }

    [Fact]
    public async Task ReconcileAsync_DayCountNearTwoToThe53WithACarriedCharge_SaturatesAtTwoToThe53()
    {
        // A charge carried while no period could be placed joins the count when one is: the room left below 2^53 is what
        // the count holds, not its reported usage (itself capped, less the carried part), or each such join could pass it.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        using PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(100, 0));
        Assert.True(lease.IsAcquired);
        RedisKey key = policy[0].KeyOf(ann);
        IDatabase database = _connection.GetDatabase();
        await database.HashSetAsync(key, [new HashEntry("u", (1L << 53) - 10), new HashEntry("d", 1L << 52)]);

        await lease.ReconcileAsync(new RequestCost(200, 0));

        Assert.Equal(1L << 53, (long)await database.HashGetAsync(key, "u"));
    }

    [Fact]
    public async Task ReconcileAsync_OverrunOnACountNearTwoToThe63_SaturatesItAndStillChargesTheLayersAfterIt()
    {
        // Overruns are counted past the limit; enough of them would take HINCRBY past 2^63, and the script would stop there
        // with the layers after it never charged. The count saturates instead, and every layer is charged.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        using PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(100, 0));
        Assert.True(lease.IsAcquired);
        await _connection.GetDatabase().HashSetAsync(policy[0].KeyOf(ann), "c", long.MaxValue - 100);

        await lease.ReconcileAsync(new RequestCost(600, 0));

        IReadOnlyList<LayerUsage> usage = await policy.GetUsageAsync(ann);
        Assert.Equal(600, usage[1].Used);
        Assert.Equal(1L << 53, usage[0].Used);
    }

    [Fact]
    public async Task ReconcileAsync_ALayersKeyOfAnotherType_WritesNoLayer()
    {
        // A script stopped by an error keeps what it wrote: a WRONGTYPE met at the second layer left the first one charged
        // and the second not, and the settle marker said it was applied. Every layer is read before any is written.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .AddLayer("tokens/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        using PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(100, 0));
        Assert.True(lease.IsAcquired);
        IDatabase database = _connection.GetDatabase();
        RedisKey second = policy[1].KeyOf(ann);
        await database.KeyDeleteAsync(second);
        await database.StringSetAsync(second, "another app's value");

        await Assert.ThrowsAnyAsync<Exception>(async () => await lease.ReconcileAsync(new RequestCost(600, 0)));

        Assert.Equal(100, (long)await database.HashGetAsync(policy[0].KeyOf(ann), "u")); // the first layer kept its estimate
        Assert.Empty(_connection.GetServer(_connection.GetEndPoints()[0]).Keys(pattern: $"*{_prefix}*settle*"));
    }

    [Fact]
    public async Task SettleScript_ChargeWhenNoPeriodHoldsTheServersNow_CountsFromTheNextPeriodPlaced()
    {
        // A node whose clock is days off sends periods that miss the server's now: an overrun it settles then cannot be
        // placed. It used to go into a field the next placed write reset, so the charge was lost.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        RedisKey key = policy[0].KeyOf(new Call("ann", "x"));
        long clientNow = (_time.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks / 10;
        var values = new RedisValue[2 + PolicyScripts.Stride];
        values[0] = clientNow + (3 * 86_400_000_000L); // the server's now, days past every period the node sent
        values[1] = "lease-1#1";
        policy[0].WriteArguments(values, 2, limit: 1_000, amount: 250, tag: 0, clientNow);
        await _connection.GetDatabase().ScriptEvaluateAsync(PolicyScripts.Settle, [key, $"{{{_prefix}}}:settle:lease-1"], values);

        Assert.Equal(250, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
        using (PolicyLease refused = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(800, 0)))
        {
            Assert.False(refused.IsAcquired); // 250 + 800 > 1,000
        }

        using PolicyLease admitted = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(700, 0));
        Assert.True(admitted.IsAcquired);
        Assert.Equal(950, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
        Assert.False(await _connection.GetDatabase().HashExistsAsync(key, "d")); // taken in by the placed write
    }

    [Fact]
    public void Build_LimitsAndCostsPast2Pow52_AreRefused()
    {
        // At 2^53 a count of 2^53 - 1 plus 2 rounds to the limit in Lua's numbers, and the check admits one past it.
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder()
            .AddLayer("cents/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, (1L << 52) + 1).Counting(PolicyMeter.Money)).Build());
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("cents/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1L << 52).Counting(PolicyMeter.Money)).Build();
        using PolicyLease lease = policy.Acquire(new Call("ann", "x"), new RequestCost(0, 1));
        Assert.True(lease.IsAcquired);
        Assert.Throws<ArgumentOutOfRangeException>(() => lease.Reconcile(new RequestCost(0, (1L << 52) + 1)));
    }

    [Fact]
    public async Task Dispose_RefundingLayerAfterSteps_KeepsWhatTheStepsConsumed()
    {
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .AddLayer("requests/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10).RefundingUnreconciled())
            .Build();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0));
        await lease.ChargeAsync(new RequestCost(900, 0)); // 800 past the estimate: spent
        lease.Dispose();

        IReadOnlyList<LayerUsage> usage = await policy.GetUsageAsync(new Call("ann", "x"));
        Assert.Equal(900, usage[0].Used); // the steps spent the estimate and 800 past it: nothing comes back
        Assert.Equal(0, usage[1].Used); // a refunding request layer gives its request back

        PolicyLease partly = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0));
        await partly.ChargeAsync(new RequestCost(30, 0));
        partly.Dispose();
        Assert.Equal(930, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used); // the 70 the steps did not consume came back
    }

    [Fact]
    public async Task TokenBucketAndCounterLayers_RefundWhereTaken_AndNothingOnceTheirWindowHasPassed()
    {
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens bucket", call => call.User, PolicyRule.TokenBucket(1_000, 100, TimeSpan.FromSeconds(1)).Counting(PolicyMeter.Tokens))
            .AddLayer("tokens/min", call => call.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 2_000).Counting(PolicyMeter.Tokens))
            .Build();
        PolicyLease first = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(900, 0));
        using PolicyLease refused = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(200, 0));
        Assert.Equal("tokens bucket", refused.BlockingLayer);
        Assert.Equal(TimeSpan.FromSeconds(1), refused.RetryAfter); // 100 short at 100 a second
        await first.ReconcileAsync(new RequestCost(300, 0));
        Assert.Equal([300, 300], (await policy.GetUsageAsync(new Call("ann", "x"))).Select(layer => layer.Used));

        PolicyLease late = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(500, 0));
        _time.Advance(TimeSpan.FromMinutes(2)); // its counter segment has left the window; the bucket refilled
        await late.ReconcileAsync(new RequestCost(0, 0));
        Assert.Equal([0, 0], (await policy.GetUsageAsync(new Call("ann", "x"))).Select(layer => layer.Used));
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(1_000, 0))).IsAcquired); // no refund took more than was counted
    }

    [Fact]
    public async Task TokenBucketLayer_HugeOverrun_IsOwedAndTheLayersAfterItCountTheirs()
    {
        // One token an hour, charged 3e12 tokens: the script's debt (tokens x period in µs, 1e22) put the key's TTL past
        // what PEXPIRE accepts, so the settle failed after the bucket's write and the money layer's overrun was never
        // counted. The TTL now stops at 10^15 ms and the wait reported at 2^53 µs; the debt is kept.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens bucket", call => call.User, PolicyRule.TokenBucket(100, 1, TimeSpan.FromHours(1)).Counting(PolicyMeter.Tokens))
            .AddLayer("money/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 10_000_000).Counting(PolicyMeter.Money))
            .Build();
        var ann = new Call("ann", "x");
        PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(1, 1));
        await lease.ChargeAsync(new RequestCost(3_000_000_000_000, 5_000_000));
        lease.Dispose();

        IReadOnlyList<LayerUsage> usage = await policy.GetUsageAsync(ann);
        Assert.Equal(5_000_000, usage[1].Used);
        using PolicyLease next = await policy.AcquireAsync(ann, new RequestCost(1, 0));
        Assert.Equal("tokens bucket", next.BlockingLayer);
        Assert.Equal(TimeSpan.FromTicks(9007199254740992L * 10), next.RetryAfter); // 3e12 hours, reported as 285 years
        Assert.Equal(3_000_000_000_000, (await policy.GetUsageAsync(ann))[0].Used); // the whole debt, kept (the step counted against the estimate)
    }

    [Fact]
    public async Task TokenBucketLayer_RefundAfterALaterAdmission_GivesNothingBack()
    {
        // 900 reserved; ten seconds later the bucket is full again and another request takes all 1,000. Giving the 900 back
        // then (they came back by refill already) let a third request take 900 more at the same instant: 1,900 against a
        // burst of 1,000. A refund is exact only while no later admission followed its own.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens bucket", call => call.User, PolicyRule.TokenBucket(1_000, 100, TimeSpan.FromSeconds(1)).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        PolicyLease early = await policy.AcquireAsync(ann, new RequestCost(900, 0));
        _time.Advance(TimeSpan.FromSeconds(10));
        using PolicyLease whole = await policy.AcquireAsync(ann, new RequestCost(1_000, 0));
        Assert.True(whole.IsAcquired);

        await early.ReconcileAsync(new RequestCost(0, 0));

        using PolicyLease third = await policy.AcquireAsync(ann, new RequestCost(900, 0));
        Assert.Equal("tokens bucket", third.BlockingLayer);
        Assert.Equal(TimeSpan.FromSeconds(9), third.RetryAfter);
    }

    [Fact]
    public async Task TokenBucketLayer_AdmissionByANodeWhoseClockIsBehind_StillEndsAnEarlierReservationsRefund()
    {
        // Node B's clock is ten seconds behind A's: its admission happens at A's first admission's time. Had the bucket
        // recorded that time as its last admission, A's first reservation would read as the last one again and its refund
        // would give 900 back after the bucket had refilled and been drained: a tag that only grows prevents it.
        var tokens = PolicyRule.TokenBucket(1_000, 100, TimeSpan.FromSeconds(1)).Counting(PolicyMeter.Tokens);
        using RedisRatePolicy<Call> nodeA = Builder().AddLayer("tokens bucket", call => call.User, tokens).Build();
        RedisLimiterOptions behind = Options();
        behind.ClientClock = new FakeTimeProvider(_time.GetUtcNow());
        using RedisRatePolicy<Call> nodeB = new RedisRatePolicyBuilder<Call>(behind).AddLayer("tokens bucket", call => call.User, tokens).Build();
        var ann = new Call("ann", "x");
        PolicyLease early = await nodeA.AcquireAsync(ann, new RequestCost(900, 0));
        _time.Advance(TimeSpan.FromSeconds(10));
        using PolicyLease most = await nodeA.AcquireAsync(ann, new RequestCost(999, 0));
        using PolicyLease last = await nodeB.AcquireAsync(ann, new RequestCost(1, 0));
        Assert.True(most.IsAcquired && last.IsAcquired);

        await early.ReconcileAsync(new RequestCost(0, 0));

        using PolicyLease refused = await nodeA.AcquireAsync(ann, new RequestCost(900, 0));
        Assert.Equal("tokens bucket", refused.BlockingLayer);
    }

    [Fact]
    public async Task SlidingLogLayer_MicrosecondsBeforeTheWindowEnds_StillCountsEveryPermit()
    {
        // Stamps are 16-digit µs: a script that printed one into a string (Lua keeps 14 digits) let these two out 29 µs early.
        using RedisRatePolicy<Call> policy = Builder().AddLayer("log", call => call.User, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), 2)).Build();
        (await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).Dispose();
        (await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).Dispose();

        _time.Advance(TimeSpan.FromMinutes(1) - TimeSpan.FromTicks(290));
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        _time.Advance(TimeSpan.FromTicks(290));
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
    }

    [Fact]
    public async Task TwoPolicies_OnePrefix_SameLayerNameOtherRule_KeepSeparateState()
    {
        using RedisRatePolicy<Call> perMinute = Builder().AddLayer("user", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1)).Build();
        using RedisRatePolicy<Call> perHour = Builder().AddLayer("user", call => call.User, PolicyRule.SlidingWindowLog(TimeSpan.FromHours(1), 2)).Build();

        Assert.True((await perMinute.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        Assert.True((await perHour.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired); // its own state, not a WRONGTYPE
        Assert.True((await perHour.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        Assert.False((await perMinute.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        Assert.False((await perHour.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_ScriptFlushed_LoadsItAgain()
    {
        using RedisRatePolicy<Call> policy = Gateway();
        using (PolicyLease first = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None))
        {
            Assert.True(first.IsAcquired);
        }

        using (ConnectionMultiplexer admin = _server.Connect(admin: true))
        {
            await admin.GetServer(admin.GetEndPoints()[0]).ScriptFlushAsync();
        }

        using PolicyLease second = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(second.IsAcquired);
    }

    [Fact]
    public async Task WithLeaseTimeout_OutOfRange_Throws_AndTheLongestAllowedStillAdmits()
    {
        // Over about 149 days the renewal timer (a third of the timeout) exceeded what a timer takes: the lease's constructor
        // threw after the script had counted the slot, so the caller got no lease and the slot stayed taken.
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder().WithLeaseTimeout(TimeSpan.FromDays(200)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder().WithLeaseTimeout(TimeSpan.MaxValue));
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder().WithLeaseTimeout(TimeSpan.FromMilliseconds(2)));

        // The renewal timer runs on the client clock here, a FakeTimeProvider, which bounds a timer's due time as the
        // system's timers do (about 49 days).
        using RedisRatePolicy<Call> policy = Builder()
            .AddGlobalLayer("streams", PolicyRule.Concurrency(1))
            .WithLeaseTimeout(TimeSpan.FromDays(100))
            .Build();

        using PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(lease.IsAcquired);
    }

    /// <summary>A gateway's policy: IP-less for brevity; per user, per (user, tool), streams, tokens per day, a global daily cost cap.</summary>
    private RedisRatePolicy<Call> Gateway(long globalCents = 10_000) => Builder()
        .AddLayer("user/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 20))
        .AddLayer("tool/min", call => $"{call.User}:{call.Tool}", PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), 2))
        .AddLayer("streams", call => call.User, PolicyRule.Concurrency(1))
        .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
        .AddGlobalLayer("global cents/day", PolicyRule.Calendar(CalendarPeriod.Day, globalCents).Counting(PolicyMeter.Money).AsServiceWide())
        .WithLeaseTimeout(TimeSpan.FromMinutes(5))
        .Build();

    private RedisRatePolicyBuilder<Call> Builder() => new(Options());

    private RedisLimiterOptions Options() => new()
    {
        Connection = _connection,
        KeyPrefix = _prefix,
        ClientClock = _time,
        SyncTimeout = TimeSpan.FromSeconds(2),
    };

    /// <summary>A request: who calls and which tool.</summary>
    public sealed record Call(string User, string Tool);
}
