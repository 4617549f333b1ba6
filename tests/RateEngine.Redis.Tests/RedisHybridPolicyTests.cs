using System.Collections.Concurrent;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Redis.Hybrid;
using RateEngine.Redis.Policies;
using RateEngine.Redis.Tests.Support;
using RateEngine.Tests.Support;
using StackExchange.Redis;
using Call = RateEngine.Redis.Tests.RedisRatePolicyTests.Call;

namespace RateEngine.Redis.Tests;

/// <summary>
/// The layered policy in hybrid mode on a real Redis: fixed-window, counter and calendar layers served from local blocks
/// (all or nothing among them and with the layers decided per request), refunds into blocks, overruns charged past the
/// cap, tier changes, the pause across nodes, and several nodes whose caps hold together.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class RedisHybridPolicyTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 12, 2, 9, 0, 0, TimeSpan.Zero);

    private readonly RedisServer _server;
    private readonly ConnectionMultiplexer _connection;
    private readonly FakeTimeProvider _time = new(Start);
    private readonly string _prefix = "hybrid-policy-" + Guid.NewGuid().ToString("N");

    public RedisHybridPolicyTests(RedisServer server)
    {
        _server = server;
        _connection = server.Connect();
    }

    public void Dispose() => _connection.Dispose();

    [Fact]
    public async Task AcquireAsync_BlockServedLayers_TakeFarFewerRoundTripsThanRequests_AndCountExactly()
    {
        using RedisRatePolicy<Call> policy = Budgets();
        for (int i = 0; i < 400; i++)
        {
            using PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(10, 1));
            Assert.True(lease.IsAcquired);
        }

        Assert.True(policy.RoundTrips < 40, $"{policy.RoundTrips} round trips for 400 requests");
        IReadOnlyList<LayerUsage> usage = await policy.GetUsageAsync(new Call("ann", "x"));
        Assert.Equal([400, 4_000, 400], usage.Select(layer => layer.Used)); // Redis's count less this node's unused permits
    }

    [Fact]
    public async Task TryAcquire_EveryLayerServedFromBlocks_DecidesWithoutACall_OnceABlockIsHere()
    {
        using RedisRatePolicy<Call> policy = Budgets();
        Assert.False(policy.TryAcquire(new Call("ann", "x"), new RequestCost(10, 1), out _)); // no block yet: AcquireAsync reserves one
        (await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(10, 1))).Dispose();
        long calls = policy.RoundTrips;

        Assert.True(policy.TryAcquire(new Call("ann", "x"), new RequestCost(10, 1), out PolicyLease? lease));
        Assert.True(lease.IsAcquired);
        Assert.Equal(["user/hour", "tokens/day", "global cents/day"], lease.UsageAtDecision!.Select(layer => layer.Layer));
        Assert.Equal(2, lease.UsageAtDecision![0].Used);
        lease.Dispose();
        Assert.Equal(calls, policy.RoundTrips);

        using RedisRatePolicy<Call> mixed = Builder().AddLayer("streams", call => call.User, PolicyRule.Concurrency(2)).Build();
        Assert.False(mixed.TryAcquire(new Call("ann", "x"), RequestCost.None, out _)); // a per-request layer: a script call decides
    }

    [Fact]
    public async Task AcquireAsync_OneLayerRefuses_TheOthersGetTheirSharesBack()
    {
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("user/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), 20))
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .AddLayer("streams", call => call.User, PolicyRule.Concurrency(1))
            .Build();
        PolicyLease first = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(600, 0));
        Assert.True(first.IsAcquired);

        using PolicyLease tokens = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(600, 0)); // a block layer refuses
        Assert.Equal("tokens/day", tokens.BlockingLayer);
        Assert.False(tokens.IsPermanentRefusal);
        using PolicyLease slot = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0)); // the per-request layer refuses
        Assert.Equal("streams", slot.BlockingLayer);
        Assert.False(slot.IsPermanentRefusal);
        using PolicyLease huge = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(1_001, 0)); // above the cap: never
        Assert.Equal("tokens/day", huge.BlockingLayer);
        Assert.True(huge.IsPermanentRefusal);
        Assert.Equal([1, 600, 1], slot.UsageAtDecision!.Select(layer => layer.Used)); // every layer, the refused request in none
        Assert.Equal([1, 600, 1], (await policy.GetUsageAsync(new Call("ann", "x"))).Select(layer => layer.Used));

        first.Dispose();
        using PolicyLease next = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0));
        Assert.True(next.IsAcquired);
        Assert.Equal([2, 700, 1], (await policy.GetUsageAsync(new Call("ann", "x"))).Select(layer => layer.Used));
    }

    [Fact]
    public async Task Reconcile_RefundGoesBackToTheBlock_AnOverrunPastTheBlockIsCountedOnRedisPastTheCap()
    {
        using RedisRatePolicy<Call> policy = Budgets();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 10));
        long calls = policy.RoundTrips;
        Assert.Equal(RequestCost.None, await lease.ReconcileAsync(new RequestCost(100, 4)));
        lease.Dispose();
        Assert.Equal(calls, policy.RoundTrips); // the refund went into this node's blocks
        Assert.Equal([1, 100, 4], (await policy.GetUsageAsync(new Call("ann", "x"))).Select(layer => layer.Used));

        PolicyLease big = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 1));
        Assert.Equal(new RequestCost(9_900, 0), await big.ReconcileAsync(new RequestCost(10_000, 1))); // past the 5,000 cap
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await big.ReconcileAsync(new RequestCost(1, 1)));
        big.Dispose();
        Assert.Equal(10_100, (await policy.GetUsageAsync(new Call("ann", "x")))[1].Used); // spent, so counted

        using PolicyLease refused = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 0));
        Assert.Equal("tokens/day", refused.BlockingLayer);
    }

    [Fact]
    public async Task Charge_StepsPastTheEstimate_AreCountedAtOnce_DisposeOfARefundingLayerKeepsWhatTheyConsumed()
    {
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .Build();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0));
        await lease.ChargeAsync(new RequestCost(80, 0));
        await lease.ChargeAsync(new RequestCost(80, 0)); // 60 past the estimate
        Assert.Equal(new RequestCost(160, 0), lease.Consumed);
        Assert.Equal(160, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
        lease.Dispose(); // not reconciled: the steps spent the estimate and 60 past it, so nothing comes back
        Assert.Equal(160, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
        Assert.Throws<InvalidOperationException>(() => lease.Charge(new RequestCost(1, 0)));

        PolicyLease partly = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0));
        await partly.ChargeAsync(new RequestCost(30, 0));
        partly.Dispose(); // the 70 the steps did not consume come back
        Assert.Equal(190, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
    }

    [Fact]
    public async Task ChargeAsync_TokenAlreadyCancelled_ChargesNothingAnywhere()
    {
        // A block layer and an exact part (the streams): the OperationCanceledException must mean "not charged" on both.
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .AddLayer("streams", call => call.User, PolicyRule.Concurrency(2))
            .Build();
        using PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(10, 0));
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await lease.ChargeAsync(new RequestCost(30, 0), cancelled.Token));

        Assert.Equal(RequestCost.None, lease.Consumed);
        await lease.ChargeAsync(new RequestCost(30, 0)); // the caller charges again, as the exception told it to
        Assert.Equal(new RequestCost(30, 0), lease.Consumed);
        Assert.Equal(30, Assert.Single(await policy.GetUsageAsync(new Call("ann", "x")), layer => layer.Layer == "tokens/min").Used);
    }

    [Fact]
    public async Task ReconcileConsumedAsync_SettlesAtWhatTheStepsCharged_AndTheLeaseIsSettled()
    {
        using RedisRatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(500, 0));
        await lease.ChargeAsync(new RequestCost(30, 0));
        await lease.ChargeAsync(new RequestCost(40, 0));
        Assert.False(lease.IsSettled);

        Assert.Equal(RequestCost.None, await lease.ReconcileConsumedAsync());

        Assert.True(lease.IsSettled);
        Assert.Equal(70, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await lease.ReconcileConsumedAsync());
        lease.Dispose();
        Assert.Equal(70, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
    }

    [Fact]
    public async Task UpdateTiers_Lowered_ABlockGrantedUnderTheOldCapIsGivenBack_KeepingUsage()
    {
        var tiers = new PolicyTiers { ["free"] = { ["requests/hour"] = 100 } };
        using RedisRatePolicy<Call> policy = Builder()
            .UseTiers(_ => "free", tiers)
            .AddLayer("requests/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1)))
            .Build();
        (await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).Dispose(); // this node now holds a block of dozens

        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["requests/hour"] = 3 } });
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired); // 3 in the hour, the first included
        Assert.Equal(3, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);

        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["requests/hour"] = 4 } });
        Assert.True((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired); // a refusal cached under 3 is forgotten
        Assert.False((await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
    }

    [Fact]
    public async Task MixedTiersOnOneKey_EachRequestIsDecidedUnderItsOwnTiersCap()
    {
        // One global key, its cap by the request's tier: a free request must never be served from a block granted under
        // the pro cap, even when a pro request sets the key's cap while the free one waits on Redis.
        var tiers = new PolicyTiers { ["free"] = { ["requests/min"] = 1 }, ["pro"] = { ["requests/min"] = 1_000 } };
        using RedisRatePolicy<Call> policy = Builder()
            .UseTiers(call => call.Tool, tiers)
            .AddGlobalLayer("requests/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)))
            .Build();
        for (int i = 0; i < 10; i++)
        {
            Assert.True((await policy.AcquireAsync(new Call("ann", "pro"), RequestCost.None)).IsAcquired);
        }

        ValueTask<PolicyLease> free = policy.AcquireAsync(new Call("bob", "free"), RequestCost.None); // on the wire
        policy.TryAcquire(new Call("cy", "pro"), RequestCost.None, out PolicyLease? pro);
        pro?.Dispose();

        using PolicyLease decided = await free;
        Assert.False(decided.IsAcquired); // 10 or more counted against a cap of 1
        Assert.Equal("requests/min", decided.BlockingLayer);
        using PolicyLease later = await policy.AcquireAsync(new Call("bob", "free"), RequestCost.None);
        Assert.False(later.IsAcquired);
        Assert.True((await policy.AcquireAsync(new Call("cy", "pro"), RequestCost.None)).IsAcquired); // the pro cap still admits
    }

    [Fact]
    public async Task AcquireAsync_ARefusalCachedUnderALowerTier_DoesNotSetAHigherTierRequestsRetryAfter()
    {
        // Ann's free-tier refusal on her day budget stays cached until midnight. Her pro request, refused by the minute's
        // global window, must be told to retry within the minute: the free refusal does not bind the pro cap.
        var time = new FakeTimeProvider(Start);
        var tiers = new PolicyTiers { ["free"] = { ["requests/day"] = 1 }, ["pro"] = { ["requests/day"] = 100 } };
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .UseTiers(call => call.Tool, tiers)
            .AddGlobalLayer("requests/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .AddLayer("requests/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day))
            .Build();
        (await policy.AcquireAsync(new Call("ann", "free"), RequestCost.None)).Dispose();
        time.Advance(TimeSpan.FromMinutes(1));
        using PolicyLease dayRefused = await policy.AcquireAsync(new Call("ann", "free"), RequestCost.None);
        Assert.Equal("requests/day", dayRefused.BlockingLayer);
        (await policy.AcquireAsync(new Call("bob", "pro"), RequestCost.None)).Dispose(); // the minute's one request
        using PolicyLease minuteRefused = await policy.AcquireAsync(new Call("cy", "pro"), RequestCost.None);
        Assert.Equal("requests/min", minuteRefused.BlockingLayer);

        using PolicyLease refused = await policy.AcquireAsync(new Call("ann", "pro"), RequestCost.None);

        Assert.False(refused.IsAcquired);
        Assert.Equal("requests/min", refused.BlockingLayer);
        Assert.True(refused.RetryAfter <= TimeSpan.FromMinutes(1), $"retry after {refused.RetryAfter}");
    }

    [Fact]
    public async Task Dispose_ClockThrowsWhileGivingBack_TheConcurrencySlotIsStillReleased()
    {
        var time = new FailingClock();
        time.SetUtcNow(Start);
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("req/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100).RefundingUnreconciled())
            .AddLayer("streams", call => call.User, PolicyRule.Concurrency(1))
            .Build();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.True(lease.IsAcquired);

        time.FailOnce = true;
        time.FailAfter(0); // the block's give-back reads the clock first, and that read fails
        Assert.Throws<TimeoutException>(lease.Dispose);

        // The exact part's release goes to Redis in the background.
        await Eventually(async () =>
        {
            using PolicyLease next = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None);
            return next.IsAcquired;
        });
    }

    [Fact]
    public async Task ReconcileAsync_ClockThrowsWhileADebtIsReserved_TheExactPartIsStillSettled()
    {
        // The overrun is more than the block holds, so the blocks owe it and a reservation carries it to Redis. When the one
        // started in the background failed, the reconcile sent its own; a clock that failed that one too, with anything but
        // a timeout, ended the reconcile there: the lease was settled locally, so a retry was refused, and the exact part
        // (the bucket) never counted its overrun.
        var time = new FailingClock();
        time.SetUtcNow(Start);
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("tokens/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100_000).Counting(PolicyMeter.Tokens))
            .AddLayer("bucket", call => call.User, PolicyRule.TokenBucket(100_000, 100_000, TimeSpan.FromMinutes(1)).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(10, 0));
        Assert.True(lease.IsAcquired);

        time.Failure = static () => new InvalidOperationException("the clock failed");
        time.FailAfter(1, failures: 2); // the overrun's read passes; the background reservation's and the reconcile's own fail
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await lease.ReconcileAsync(new RequestCost(90_000, 0)));
        lease.Dispose();

        Assert.Equal(90_000, (await policy.GetUsageAsync(ann))[1].Used);
    }

    [Fact]
    public async Task Reconcile_ClockThrowsPartWayThroughTheRefunds_NothingIsRefundedTwice()
    {
        var time = new FailingClock();
        time.SetUtcNow(Start);
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("tokens/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens))
            .Build();
        PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0));
        Assert.True(lease.IsAcquired);

        time.FailAfter(1); // the first layer's give-back reads the clock; the second's fails
        Assert.Throws<TimeoutException>(() => lease.Reconcile(new RequestCost(0, 0)));
        time.Failing = false;
        lease.Dispose(); // settled already: gives nothing back again

        long admitted = 0;
        for (int i = 0; i < 20; i++)
        {
            using PolicyLease more = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(100, 0));
            if (!more.IsAcquired)
            {
                break;
            }

            more.Reconcile(new RequestCost(100, 0));
            admitted += 100;
        }

        Assert.True(admitted <= 1_000, $"{admitted} tokens admitted in a minute of 1,000");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Reconcile_ClockThrowsWhileASecondLayersOverrunIsCharged_EveryLayerCountsTheActualOnce(bool charge)
    {
        // The first layer charged its 200 past the estimate; the second's clock read failed. The lease stayed open with the
        // step half counted: the caller's dispose then refunded the first layer's estimate (counting 200 of 300), and the
        // second layer never counted its 200. Now every layer counts the step once, and the exception follows.
        var time = new FailingClock();
        time.SetUtcNow(Start);
        using RedisRatePolicy<Call> policy = TwoTokenLayers(time);
        var ann = new Call("ann", "x");
        PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(100, 0));
        Assert.True(lease.IsAcquired);

        time.FailOnce = true;
        time.FailAfter(2); // the read before any overrun and the first layer's after its take; the second layer's fails
        if (charge)
        {
            await Assert.ThrowsAsync<TimeoutException>(async () => await lease.ChargeAsync(new RequestCost(300, 0)));
        }
        else
        {
            await Assert.ThrowsAsync<TimeoutException>(async () => await lease.ReconcileAsync(new RequestCost(300, 0)));
        }

        lease.Dispose();

        await Eventually(async () => (await policy.GetUsageAsync(ann)) is [{ Used: 300 }, { Used: 300 }]);
    }

    [Fact]
    public async Task Charge_ClockThrowsBeforeAnyOverrunIsCounted_CountsNothingAndMayBeRetried()
    {
        // As in process: a charge whose clock fails before it counted anything leaves the lease as it was, so the caller
        // can charge the step again and it counts once.
        var time = new FailingClock();
        time.SetUtcNow(Start);
        using RedisRatePolicy<Call> policy = TwoTokenLayers(time);
        var ann = new Call("ann", "x");
        using PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(100, 0));
        Assert.True(lease.IsAcquired);

        time.FailOnce = true;
        time.FailAfter(0);
        Assert.Throws<TimeoutException>(() => lease.Charge(new RequestCost(300, 0)));
        Assert.Equal(RequestCost.None, lease.Consumed);
        lease.Charge(new RequestCost(300, 0));
        await lease.ReconcileAsync(new RequestCost(300, 0));

        await Eventually(async () => (await policy.GetUsageAsync(ann)) is [{ Used: 300 }, { Used: 300 }]);
    }

    /// <summary>Tokens per minute (refunding an unreconciled estimate) and per day, both served from blocks, on <paramref name="time"/>.</summary>
    private RedisRatePolicy<Call> TwoTokenLayers(FakeTimeProvider time) => new RedisRatePolicyBuilder<Call>(Options(_connection, time))
        .AddLayer("tokens/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
        .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens))
        .Build();

    [Fact]
    public async Task Reconcile_ClockThrowsInTheBlocksGiveBack_TheLayersOnRedisAreStillReconciled()
    {
        // Settled here before its give-back, the lease used to leave without reconciling its part on Redis: a retry was
        // refused as reconciled already, and the Redis layer never saw the actual.
        var time = new FailingClock();
        time.SetUtcNow(Start);
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("usd/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 10_000).Counting(PolicyMeter.Money))
            .AddLayer("streams", call => call.User, PolicyRule.Concurrency(4))
            .Build();
        using PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(0, 50));
        Assert.True(lease.IsAcquired);

        time.FailOnce = true;
        time.FailAfter(0); // the money refund's give-back reads the clock first, and that read fails
        Assert.Throws<TimeoutException>(() => lease.Reconcile(new RequestCost(0, 10)));

        Assert.True(lease.IsSettled);
    }

    [Fact]
    public async Task AcquireAsync_ClockThrowsWhileACold_KeysReservationIsSized_TheKeyIsNotLeftWaitingForIt()
    {
        var time = new FailingClock();
        time.SetUtcNow(Start);
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("req/min", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100))
            .Build();

        time.FailAfter(2); // the take's and the refill's reads pass; the reservation's own (sizing it) fails
        await Assert.ThrowsAsync<TimeoutException>(async () => await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None));
        time.Failing = false;

        Assert.False(policy.BlockLayer(0).Blocks!.RefillInFlight("ann"));
        using var soon = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        using PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), RequestCost.None, soon.Token);
        Assert.True(lease.IsAcquired);
    }

    [Fact]
    public async Task Pause_OnOneNode_ReachesAnotherWithinTheCheckInterval_UntilResumed()
    {
        using ConnectionMultiplexer otherConnection = _server.Connect();
        using RedisRatePolicy<Call> node1 = Budgets();
        using RedisRatePolicy<Call> node2 = Budgets(otherConnection);
        Assert.True((await node2.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 1))).IsAcquired); // node2 holds blocks

        node1.Pause("incident 42");
        await Eventually(() => node2.IsPaused);
        using PolicyLease refused = await node2.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 1));
        Assert.False(refused.IsAcquired);
        Assert.True(refused.IsServiceWide);
        Assert.Equal("incident 42", refused.Reason);

        node2.Resume(); // a paused node reads the switch on every request: the resume counts on the other at once
        Assert.True((await node1.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 1))).IsAcquired);
        Assert.False(node1.IsPaused);
    }

    [Fact]
    public async Task Dispose_UnusedPermitsGoBackToRedis()
    {
        RedisRatePolicy<Call> policy = Budgets();
        (await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(10, 1))).Dispose();
        using RedisRatePolicy<Call> reader = Budgets(_server.Connect());
        Assert.True((await reader.GetUsageAsync(new Call("ann", "x")))[0].Used > 1); // another node sees the block as used

        policy.Dispose();
        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x"))).Select(layer => layer.Used).SequenceEqual([1, 10, 1]));
    }

    [Fact]
    public async Task Reconcile_AfterTheIdleSweepForgotTheKey_TheRefundStillReachesRedis()
    {
        // A long stream holds its lease while its key sits idle on this node: the sweep gives the block back and forgets the
        // key; the stream's refund must then go to Redis, not into the forgotten block.
        var time = new FakeTimeProvider(Start);
        RedisLimiterOptions options = Options(_connection, time);
        options.Hybrid!.IdleReturn = TimeSpan.FromSeconds(1);
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(options)
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens))
            .Build();
        using RedisRatePolicy<Call> reader = Budgets(_server.Connect());
        PolicyLease stream = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0));

        time.Advance(TimeSpan.FromSeconds(1)); // the sweep: the key was idle for IdleReturn
        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 400); // the block went back
        await stream.ReconcileAsync(new RequestCost(100, 0));
        stream.Dispose();
        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 100);
        Assert.Equal(100, (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PassDebtOn_ADebtLeftOnAKeyTheSweepForgot_MovesToTheLiveKeyAndReachesRedis(bool redisAway)
    {
        // A charge landed on an idle key just after the sweep found it owed nothing (the sweep sees the debt once the key is
        // out of its table, LocalReservationsTests). The debt must move to the key's live state: sent now, or, while the
        // breaker is open, kept there (a key that owes is never forgotten) for the first reservation after the outage.
        var time = new FakeTimeProvider(Start);
        RedisLimiterOptions options = Options(_connection, time);
        options.Hybrid!.IdleReturn = TimeSpan.FromSeconds(1);
        options.FailureCooldown = TimeSpan.FromMinutes(1); // open through the sweep below
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(options)
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens))
            .Build();
        using RedisRatePolicy<Call> reader = Budgets(_server.Connect());
        (await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0))).Dispose();
        RedisPolicyLayer<Call> layer = policy.BlockLayer(0);
        LayerKey forgotten = layer.Blocks!.Find("ann")!;
        time.Advance(TimeSpan.FromSeconds(1)); // the sweep forgets the key and gives its block's leftover back
        Assert.True(forgotten.Forgotten);
        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 400);
        if (redisAway)
        {
            policy.Trip("test: Redis away");
        }

        Interlocked.Add(ref forgotten.Debt, 500); // the charge that landed after the sweep's check
        policy.PassDebtOn(layer, forgotten);

        Assert.Equal(0, Volatile.Read(ref forgotten.Debt));
        LayerKey live = layer.Blocks.Find("ann")!;
        Assert.NotSame(forgotten, live);
        if (redisAway)
        {
            Assert.Equal(500, Volatile.Read(ref live.Debt));
            time.Advance(TimeSpan.FromSeconds(1)); // a sweep during the outage keeps a key that owes
            Assert.Same(live, layer.Blocks.Find("ann"));
            Assert.Equal(400, (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used);
            return;
        }

        // Counted on Redis by the live key's reservation, which also brought a block: this node's count leaves that out.
        await Eventually(async () => (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used == 900);
    }

    [Fact]
    public async Task Dispose_AKeyStillOwingACharge_SendsItToRedis()
    {
        // An overrun no reservation has carried yet (one came back refused near the cap, or the breaker was open): once the
        // node's policy is disposed nothing else would send it, so the dispose does.
        RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection))
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens))
            .Build();
        using RedisRatePolicy<Call> reader = Budgets(_server.Connect());
        (await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0))).Dispose();
        Interlocked.Add(ref policy.BlockLayer(0).Blocks!.Find("ann")!.Debt, 500);

        policy.Dispose();

        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 900);
    }

    [Fact]
    public async Task Dispose_AnOverrunChargedWhileTheDisposesDebtReservationIsOnTheWire_IsCountedToo()
    {
        // The key is at its cap on Redis and owes 500: dispose sends a reservation for the debt, which Redis refuses a grant.
        // An overrun of 300 charged while that reservation is on the wire joins it and is not carried by it: dispose must
        // send another, or nothing on this node ever would.
        RedisRatePolicy<Call> policy = DayTokens(_connection);
        using ConnectionMultiplexer otherConnection = _server.Connect();
        using RedisRatePolicy<Call> other = DayTokens(otherConnection);
        (await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0))).Dispose();
        PolicyLease open = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0));
        Assert.True(open.IsAcquired);
        long otherUsed = await TakeTheRest(other);

        LocalReservations<LayerKey> blocks = policy.BlockLayer(0).Blocks!;
        LayerKey annKey = blocks.Find("ann")!;
        Interlocked.Add(ref annKey.Debt, 500);
        await PauseWrites(TimeSpan.FromMilliseconds(1_500));

        policy.Dispose(); // its blocks go back in the background, the debt first
        await Eventually(() => blocks.RefillInFlight("ann") && Volatile.Read(ref annKey.Debt) == 0); // the 500 on the wire, held
        open.Reconcile(new RequestCost(700, 0));
        await Eventually(() => blocks.KeyCount == 0); // its dispose is done
        other.Dispose();
        LocalReservations<LayerKey> otherBlocks = other.BlockLayer(0).Blocks!;
        await Eventually(() => otherBlocks.KeyCount == 0);

        using RedisRatePolicy<Call> reader = Budgets(_server.Connect());
        Assert.Equal(0, Volatile.Read(ref annKey.Debt));
        Assert.Equal(400 + 700 + 500 + otherUsed, (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used);
    }

    /// <summary>A node's policy of one layer: ann's tokens per day, 2,000.</summary>
    private RedisRatePolicy<Call> DayTokens(ConnectionMultiplexer connection) => new RedisRatePolicyBuilder<Call>(Options(connection))
        .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 2_000).Counting(PolicyMeter.Tokens))
        .Build();

    /// <summary>Takes ann's day one token at a time on <paramref name="node"/> until it is refused: the tokens it took.</summary>
    private static async Task<long> TakeTheRest(RedisRatePolicy<Call> node)
    {
        long taken = 0;
        while (true)
        {
            using PolicyLease lease = await node.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 0));
            if (!lease.IsAcquired)
            {
                return taken;
            }

            taken++;
        }
    }

    /// <summary>Holds every script that writes on the server for <paramref name="duration"/> (a reservation stays on the wire).</summary>
    private async Task PauseWrites(TimeSpan duration)
    {
        using ConnectionMultiplexer admin = _server.Connect(admin: true);
        await admin.GetServer(_server.Endpoint).ExecuteAsync("CLIENT", "PAUSE", ((long)duration.TotalMilliseconds).ToString(System.Globalization.CultureInfo.InvariantCulture), "WRITE");
    }

    [Fact]
    public async Task Reconcile_AnOverrunOwedWhileARefusedReservationIsOnTheWire_IsCarriedByAnotherOnceItLands()
    {
        // The key is at its cap on Redis and its block is empty. A request's reservation is on the wire (held by a pause
        // of Redis's writes), sized before the overrun of 300 became a debt: it carries none of it, and Redis refuses it a
        // grant. The debt must not wait for the key's next request (none comes) or the idle sweep (an hour away).
        using RedisRatePolicy<Call> policy = DayTokens(_connection);
        using ConnectionMultiplexer otherConnection = _server.Connect();
        using RedisRatePolicy<Call> other = DayTokens(otherConnection);
        PolicyLease open = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0));
        Assert.True(open.IsAcquired);
        await TakeTheRest(other);

        LocalReservations<LayerKey> blocks = policy.BlockLayer(0).Blocks!;
        LayerKey annKey = blocks.Find("ann")!;
        annKey.Block.TakeAll(); // counted on Redis already; left unused, so that the overrun finds no block to take from
        long atCap = (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used;
        await PauseWrites(TimeSpan.FromSeconds(1));

        ValueTask<PolicyLease> waiting = policy.AcquireAsync(new Call("ann", "x"), new RequestCost(1, 0));
        await Eventually(() => blocks.RefillInFlight("ann"));
        open.Reconcile(new RequestCost(700, 0)); // 300 past the estimate: a debt, joining the reservation on the wire
        using PolicyLease refused = await waiting;
        Assert.False(refused.IsAcquired);

        await Eventually(() => Volatile.Read(ref annKey.Debt) == 0);
        await Eventually(async () => (await policy.GetUsageAsync(new Call("ann", "x")))[0].Used == atCap + 300);
    }

    [Fact]
    public async Task Dispose_ALeaseThatOutlivesItsPolicy_GivesItsRefundToRedis()
    {
        // A stream's lease outlives its node's policy (the host shuts down while the stream ends). Disposing the lease gives
        // its estimate back (the layer refunds unreconciled ones): that refund must reach Redis, not a block of the disposed
        // node that nobody will use or return before the day ends.
        var time = new FakeTimeProvider(Start);
        RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .Build();
        using RedisRatePolicy<Call> reader = Budgets(_server.Connect());
        PolicyLease stream = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0));
        Assert.True(stream.IsAcquired);

        policy.Dispose(); // the block's leftover goes back, in the background; the stream's 400 stay counted
        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 400);
        stream.Dispose();

        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 0);
    }

    [Fact]
    public async Task ChargeAsync_ALeaseThatOutlivesItsPolicy_StillCountsItsOverrunOnRedis()
    {
        // A stream keeps charging after its node's policy was disposed (its keys forgotten): the overrun past its estimate
        // must still reach Redis, and the charge must return (the debt has no live key to move to any more).
        var time = new FakeTimeProvider(Start);
        RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens))
            .Build();
        using RedisRatePolicy<Call> reader = Budgets(_server.Connect());
        using PolicyLease stream = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(400, 0));
        policy.Dispose();
        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 400);

        await stream.ChargeAsync(new RequestCost(1_000, 0)).AsTask().WaitAsync(TimeSpan.FromSeconds(10));

        await Eventually(async () => (await reader.GetUsageAsync(new Call("ann", "x")))[1].Used == 1_000);
    }

    [Fact]
    public async Task AcquireAsync_ARefusalWhileAnotherNodeHoldsTheBudget_IsRetriedOnceThatNodeGivesItBack()
    {
        // A daily budget of 100: node A's block takes half of it; node B's request of 60 is refused (only 50 are on
        // Redis). Once A has been idle for IdleReturn its leftover goes back, and B, whose refusal was cached only for
        // IdleReturn (not until midnight, its retry time), is admitted.
        var time = new FakeTimeProvider(Start);
        RedisRatePolicy<Call> Node(ConnectionMultiplexer connection)
        {
            RedisLimiterOptions options = Options(connection, time);
            options.Hybrid!.IdleReturn = TimeSpan.FromSeconds(1);
            return new RedisRatePolicyBuilder<Call>(options)
                .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Tokens))
                .Build();
        }

        using RedisRatePolicy<Call> a = Node(_connection);
        using RedisRatePolicy<Call> b = Node(_server.Connect());
        (await a.AcquireAsync(new Call("ann", "x"), new RequestCost(20, 0))).Dispose(); // a block of 50: half of 100
        using PolicyLease refused = await b.AcquireAsync(new Call("ann", "x"), new RequestCost(60, 0));
        Assert.False(refused.IsAcquired);
        Assert.Equal(TimeSpan.FromHours(15), refused.RetryAfter); // the true retry time: midnight UTC

        time.Advance(TimeSpan.FromSeconds(1)); // A's key is idle: its leftover goes back; B's cached refusal lapses
        await Eventually(async () => (await b.GetUsageAsync(new Call("ann", "x")))[0].Used == 20);
        using PolicyLease admitted = await b.AcquireAsync(new Call("ann", "x"), new RequestCost(60, 0));
        Assert.True(admitted.IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_ABlockPeriodEndsWhileTheRequestWaitsOnRedis_TheRequestIsDecidedAgainInTheNewPeriod()
    {
        // 10 per minute per user, served from blocks, and a concurrency layer decided per request on Redis. Node A takes a
        // permit from its block of the first minute, then waits on the per-request script while the server is frozen, and
        // the minute ends meanwhile. Its permit would be used in the second minute but counted in the first: A must give it
        // back and take one the second minute counts, so that A and B together use no more than 10 in the second minute.
        var time = new FakeTimeProvider(Start);
        RedisRatePolicy<Call> Node(ConnectionMultiplexer connection)
        {
            return new RedisRatePolicyBuilder<Call>(Options(connection, time))
                .AddLayer("user/minute", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
                .AddLayer("streams", call => call.User, PolicyRule.Concurrency(100))
                .Build();
        }

        using RedisRatePolicy<Call> a = Node(_connection);
        using RedisRatePolicy<Call> b = Node(_server.Connect());
        var call = new Call("ann", "x");
        (await a.AcquireAsync(call, RequestCost.None)).Dispose(); // A's block of the first minute

        _server.Freeze();
        Task<PolicyLease> waiting;
        try
        {
            waiting = a.AcquireAsync(call, RequestCost.None).AsTask();
            await Task.Delay(200); // A's share is taken from its block; the streams script waits on the frozen server
            Assert.False(waiting.IsCompleted);
            time.Advance(TimeSpan.FromMinutes(1));
        }
        finally
        {
            _server.Thaw();
        }

        using PolicyLease late = await waiting;
        Assert.True(late.IsAcquired);
        int usedInSecondMinute = 1;
        for (int i = 0; i < 20; i++)
        {
            foreach (RedisRatePolicy<Call> node in new[] { a, b })
            {
                using PolicyLease lease = await node.AcquireAsync(call, RequestCost.None);
                usedInSecondMinute += lease.IsAcquired ? 1 : 0;
            }
        }

        Assert.InRange(usedInSecondMinute, 8, 10);
    }

    [Fact]
    public async Task Combine_OneOfItsPoliciesDisposed_RefusesAsDisposedWithoutReserving()
    {
        // ASP.NET keeps combinations while DI disposes the policies at shutdown: a combination over a disposed policy used
        // to reserve blocks into its disposed reservations, which sent each one straight back, 32 times per request.
        using RedisRatePolicy<Call> global = Builder().AddGlobalLayer("global/hour", PolicyRule.FixedWindow(TimeSpan.FromHours(1), 100)).Build();
        RedisRatePolicy<Call> user = Builder().AddLayer("user/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), 100)).Build();
        IRatePolicy<Call> both = global.Combine([user]);
        user.Dispose();

        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await both.AcquireAsync(new Call("ann", "x"), RequestCost.None));
        Assert.Throws<ObjectDisposedException>(() => ((RedisRatePolicy<Call>)both).Acquire(new Call("ann", "x"), RequestCost.None));
    }

    [Fact]
    public async Task Combine_WithAnExactPolicy_Throws_WithAHybridOne_DecidesTogether()
    {
        using RedisRatePolicy<Call> global = Builder().AddGlobalLayer("global/hour", PolicyRule.FixedWindow(TimeSpan.FromHours(1), 3)).Build();
        using RedisRatePolicy<Call> user = Builder().AddLayer("user/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), 1)).Build();
        IRatePolicy<Call> both = global.Combine([user]);
        Assert.True((await both.AcquireAsync(new Call("ann", "x"), RequestCost.None)).IsAcquired);
        using PolicyLease refused = await both.AcquireAsync(new Call("ann", "x"), RequestCost.None);
        Assert.Equal("user/hour", refused.BlockingLayer);
        Assert.Equal(1, (await global.GetUsageAsync(new Call("ann", "x")))[0].Used); // the refusal gave the global share back

        using RedisRatePolicy<Call> exact = new RedisRatePolicyBuilder<Call>(new RedisLimiterOptions { Connection = _connection, KeyPrefix = _prefix })
            .AddGlobalLayer("other", PolicyRule.Concurrency(1)).Build();
        Assert.Throws<ArgumentException>(() => global.Combine([exact]));
    }

    [Fact]
    public async Task AcquireAsync_FourNodesHammerOnePolicy_EveryCapHolds_AndRedisCountsExactlyWhatWasUsed()
    {
        // Four nodes (each its own connection and policy) with 8 callers each; windows long enough that nothing resets
        // during the run, so each cap is a hard total of the admissions.
        const int Users = 5;
        const int UserCap = 30;
        const int GlobalCap = 100;
        var nodes = Enumerable.Range(0, 4).Select(_ => _server.Connect()).ToArray();
        var policies = nodes.Select(node => new RedisRatePolicyBuilder<Call>(Options(node))
            .AddLayer("user/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), UserCap))
            .AddLayer("user tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 400).Counting(PolicyMeter.Tokens))
            .AddGlobalLayer("global/hour", PolicyRule.SlidingWindowCounter(TimeSpan.FromHours(1), 4, GlobalCap))
            .Build()).ToArray();
        (int[] admitted, long[] tokens) = await PolicyLoad.HammerAsync<Call>(policies, user => new Call(user, "x"), Users, attemptsPerCaller: 60);

        Assert.True(admitted.Sum() <= GlobalCap, $"{admitted.Sum()} admitted past the global cap of {GlobalCap}");
        for (int user = 0; user < Users; user++)
        {
            Assert.True(admitted[user] <= UserCap, $"u{user}: {admitted[user]} admitted past {UserCap}");
        }

        // Once every node has given its unused permits back, Redis counts exactly what was used and reconciled.
        foreach (RedisRatePolicy<Call> policy in policies)
        {
            policy.Dispose();
        }

        using RedisRatePolicy<Call> reader = new RedisRatePolicyBuilder<Call>(Options(_connection))
            .AddLayer("user/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), UserCap))
            .AddLayer("user tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 400).Counting(PolicyMeter.Tokens))
            .AddGlobalLayer("global/hour", PolicyRule.SlidingWindowCounter(TimeSpan.FromHours(1), 4, GlobalCap))
            .Build();
        for (int user = 0; user < Users; user++)
        {
            int index = user;
            await Eventually(async () =>
            {
                IReadOnlyList<LayerUsage> usage = await reader.GetUsageAsync(new Call($"u{index}", "x"));
                return usage[0].Used == admitted[index] && usage[1].Used == tokens[index] && usage[2].Used == admitted.Sum();
            });
        }

        foreach (ConnectionMultiplexer node in nodes)
        {
            node.Dispose();
        }
    }

    /// <summary>
    /// Three nodes, three callers each, on one fake clock that a driver moves 500 ms per 1 to 6 attempts (varied by window).
    /// The fake clock runs far faster than the real one: Redis expires keys on its real clock (a key lives for the fake time
    /// its state matters, plus a second), so a fake clock slower than real time would see a window's count expire mid-window
    /// on a loaded machine (it did, with 50 ms windows that took over a second of real time). A caller holds the
    /// clock's read lock around its acquire, so the time it records is when its permits were used; each layer's uses
    /// (requests on a fixed window, tokens on a counter) are checked offline against that layer's guarantee, across nodes.
    /// </summary>
    [Fact]
    public void Acquire_ThreeNodes_EveryLayersUsesHoldItsGuaranteeTogether()
    {
        const int Requests = 20;
        const int Tokens = 50;
        const long WindowMicroseconds = 5_000_000;
        const int TickMilliseconds = 500;
        var gate = new ReaderWriterLockSlim();
        var time = new FakeTimeProvider(Start);
        ConnectionMultiplexer[] connections = [.. Enumerable.Range(0, 3).Select(_ => _server.Connect())];
        RedisRatePolicy<Call>[] nodes = [.. connections.Select(connection => new RedisRatePolicyBuilder<Call>(new RedisLimiterOptions
        {
            Connection = connection,
            KeyPrefix = _prefix,
            ClientClock = time,
            TimeProvider = time,
            SyncTimeout = TimeSpan.FromSeconds(2),
            Hybrid = new RedisHybridOptions { MaxBlock = 16 },
        })
            .AddLayer("requests", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromTicks(WindowMicroseconds * 10), Requests))
            .AddGlobalLayer("tokens", PolicyRule.SlidingWindowCounter(TimeSpan.FromTicks(WindowMicroseconds * 10), 5, Tokens).Counting(PolicyMeter.Tokens))
            .Build())];
        try
        {
            var requests = new ConcurrentBag<Admitted>();
            var tokens = new ConcurrentBag<Admitted>();
            long refused = 0;
            long attempts = 0;
            using var stop = new CancellationTokenSource();
            var driver = new Thread(() =>
            {
                // Demand that varies by window: some fill up, some end with permits left in the nodes' blocks, which must
                // not be used once their window is over.
                var pace = new Random(7);
                long seen = 0;
                int per = 3;
                while (!stop.IsCancellationRequested)
                {
                    if (Volatile.Read(ref attempts) - seen < per)
                    {
                        Thread.Sleep(1);
                        continue;
                    }

                    seen = Volatile.Read(ref attempts);
                    gate.EnterWriteLock();
                    time.Advance(TimeSpan.FromMilliseconds(TickMilliseconds));
                    if (time.GetUtcNow().Ticks / 10 % WindowMicroseconds == 0)
                    {
                        per = pace.Next(1, 7);
                    }

                    gate.ExitWriteLock();
                }
            });
            driver.Start();
            DateTimeOffset end = time.GetUtcNow() + TimeSpan.FromTicks(WindowMicroseconds * 10 * 16);
            Thread[] callers = [.. nodes.SelectMany(node => Enumerable.Range(0, 3).Select(caller => new Thread(() =>
            {
                var random = new Random(caller);
                while (time.GetUtcNow() < end)
                {
                    int cost = random.Next(1, 6);
                    Interlocked.Increment(ref attempts);
                    gate.EnterReadLock();
                    try
                    {
                        using PolicyLease lease = node.Acquire(new Call("shared", "x"), new RequestCost(cost, 0));
                        if (lease.IsAcquired)
                        {
                            long stamp = (time.GetUtcNow().UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / 10;
                            requests.Add(new Admitted(stamp, 1));
                            tokens.Add(new Admitted(stamp, cost));
                        }
                        else
                        {
                            Interlocked.Increment(ref refused);
                        }
                    }
                    finally
                    {
                        gate.ExitReadLock();
                    }
                }
            }))).ToArray()];
            foreach (Thread caller in callers)
            {
                caller.Start();
            }

            foreach (Thread caller in callers)
            {
                caller.Join();
            }

            stop.Cancel();
            driver.Join();

            Assert.Null(Guarantee.FindViolation(new LimiterSpec(LimiterKind.Fixed, Requests, WindowMicroseconds), requests));
            Assert.Null(Guarantee.FindViolation(new LimiterSpec(LimiterKind.Counter, Tokens, WindowMicroseconds, Segments: 5), tokens));
            Assert.True(requests.Count > 16 * Requests / 3, $"{requests.Count} admissions in 16 windows: the run never filled them");
            Assert.True(refused > 0, "nothing was refused: the run never reached a cap");
        }
        finally
        {
            foreach (RedisRatePolicy<Call> node in nodes)
            {
                node.Dispose();
            }

            foreach (ConnectionMultiplexer connection in connections)
            {
                connection.Dispose();
            }
        }
    }

    private static async Task Eventually(Func<bool> condition) => await Eventually(() => Task.FromResult(condition()));

    private static async Task Eventually(Func<Task<bool>> condition)
    {
        for (int attempt = 0; attempt < 250; attempt++)
        {
            if (await condition())
            {
                return;
            }

            await Task.Delay(20);
        }

        Assert.True(await condition(), "the condition did not hold within 5 seconds");
    }

    /// <summary>Requests per user and hour, tokens per user and day, a global daily cost cap: every layer served from blocks.</summary>
    private RedisRatePolicy<Call> Budgets(ConnectionMultiplexer? connection = null) => new RedisRatePolicyBuilder<Call>(Options(connection ?? _connection))
        .AddLayer("user/hour", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), 1_000))
        .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 5_000).Counting(PolicyMeter.Tokens))
        .AddGlobalLayer("global cents/day", PolicyRule.Calendar(CalendarPeriod.Day, 10_000).Counting(PolicyMeter.Money).AsServiceWide())
        .Build();

    private RedisRatePolicyBuilder<Call> Builder() => new(Options(_connection));

    [Fact]
    public async Task ChargeAsync_OverrunTakenFromABlockWhoseSegmentEnded_ReturnsWhatItTookToThatSegment()
    {
        // The overrun's take wins, then the clock says the block's segment is over: the whole overrun is owed in the new
        // segment, and what the take held must go back to the old one, which the counter's window still counts. Dropped,
        // it was counted twice: in the old segment unused, and as the debt.
        var time = new FakeTimeProvider(Start);
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("tokens/min", call => call.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var ann = new Call("ann", "x");
        RedisKey key = policy.BlockLayer(0).KeyOf(ann);
        string firstSegment = ((Start - DateTimeOffset.UnixEpoch).Ticks / TimeSpan.FromSeconds(10).Ticks).ToString(System.Globalization.CultureInfo.InvariantCulture);
        using PolicyLease lease = await policy.AcquireAsync(ann, new RequestCost(10, 0));
        Assert.True(lease.IsAcquired);
        Assert.True((long)await _connection.GetDatabase().HashGetAsync(key, firstSegment) > 30); // the block holds more than the step needs
        time.Advance(TimeSpan.FromSeconds(15));

        await lease.ChargeAsync(new RequestCost(30, 0)); // 20 past the estimate, taken from the ended block

        // Once the debt's reservation replaced the block, its leftover went back too: the first segment keeps the lease's 10.
        await Eventually(async () => (long)await _connection.GetDatabase().HashGetAsync(key, firstSegment) == 10);
    }

    [Fact]
    public async Task AcquireAsync_DayBudgetBlock_EndsAMarginBeforeItsPeriodOnTheNodesClock()
    {
        // A block of a day's period used to live exactly to the end of the day on the node's clock, which drifts from the
        // server's (tens of parts per million where nothing disciplines it): permits could be used past midnight on the
        // server, in a day that did not count them. It ends 1/1024 of its life early.
        var time = new FakeTimeProvider(Start); // 09:00 UTC: 15 hours left in the day
        using RedisRatePolicy<Call> policy = new RedisRatePolicyBuilder<Call>(Options(_connection, time))
            .AddLayer("tokens/day", call => call.User, PolicyRule.Calendar(CalendarPeriod.Day, 100_000).Counting(PolicyMeter.Tokens))
            .Build();
        long sent = time.GetTimestamp();

        using PolicyLease lease = await policy.AcquireAsync(new Call("ann", "x"), new RequestCost(10, 0));

        LocalBlock block = policy.BlockLayer(0).Blocks!.Find("ann")!.Block;
        long day = (long)(TimeSpan.FromHours(15).TotalSeconds * time.TimestampFrequency);
        Assert.Equal(day - (day >> LocalReservations<LayerKey>.DriftMarginShift), block.ExpiresAt - sent);
        Assert.Equal(TimeSpan.FromHours(15), Assert.Single(lease.UsageAtDecision!).ResetAfter); // the period's end, not the block's
    }

    /// <summary>As <see cref="Options(ConnectionMultiplexer)"/>, with Redis's clock and the blocks' both on <paramref name="time"/>.</summary>
    private RedisLimiterOptions Options(ConnectionMultiplexer connection, FakeTimeProvider time)
    {
        RedisLimiterOptions options = Options(connection);
        options.ClientClock = time;
        options.TimeProvider = time;
        return options;
    }

    /// <summary>
    /// Blocks on the real clock with an IdleReturn of an hour: a stall of the machine between two steps must not let the idle
    /// sweep give a block back (or a cached refusal lapse) under exact round-trip and usage checks. The tests of the sweep
    /// set their own fake clock and IdleReturn.
    /// </summary>
    private RedisLimiterOptions Options(ConnectionMultiplexer connection) => new()
    {
        Connection = connection,
        KeyPrefix = _prefix,
        ClientClock = _time,
        SyncTimeout = TimeSpan.FromSeconds(2),
        Hybrid = new RedisHybridOptions { PauseCheckInterval = TimeSpan.FromMilliseconds(50), IdleReturn = TimeSpan.FromHours(1) },
    };

}
