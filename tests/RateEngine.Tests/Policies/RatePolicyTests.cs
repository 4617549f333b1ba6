using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Limiters;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Policies;

public sealed record Call(string User, string Team = "team", string Tier = "free", string Ip = "10.0.0.1");

public class RatePolicyTests
{
    private static readonly DateTimeOffset Start = new(2026, 12, 2, 10, 0, 0, TimeSpan.Zero);

    private readonly FakeTimeProvider _time = new(Start);

    private RatePolicyBuilder<Call> Builder() => new RatePolicyBuilder<Call>().UseTimeProvider(_time);

    [Fact]
    public void Acquire_LaterLayerRefuses_EarlierLayersGiveEverythingBack()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("ip", c => c.Ip, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .AddLayer("user tokens", c => c.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 100).Counting(PolicyMeter.Tokens))
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .Build();
        var call = new Call("alice");
        Assert.True(policy.Acquire(call, new RequestCost(40, 0)).IsAcquired);

        PolicyLease refused = policy.Acquire(call, new RequestCost(40, 0));

        Assert.False(refused.IsAcquired);
        Assert.Equal("user", refused.BlockingLayer);
        Assert.Equal(1, policy.GetUsage(call, "ip").Used);
        Assert.Equal(40, policy.GetUsage(call, "user tokens").Used);
    }

    [Fact]
    public void Acquire_SeveralLayersRefuse_NamesTheFirstAndCarriesTheLongestRetryAfter()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("minute", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .AddLayer("hour", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1), 1))
            .Build();
        var call = new Call("alice");
        Assert.True(policy.Acquire(call).IsAcquired);

        PolicyLease refused = policy.Acquire(call);

        Assert.Equal("minute", refused.BlockingLayer);
        Assert.Equal(TimeSpan.FromHours(1), refused.RetryAfter);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromHours(1), retryAfter);
        Assert.True(refused.TryGetMetadata(PolicyLease.BlockingLayerName, out string? layer));
        Assert.Equal("minute", layer);
        Assert.True(refused.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.Contains("minute", reason, StringComparison.Ordinal);
        Assert.False(refused.IsServiceWide);
    }

    [Fact]
    public void Acquire_GlobalCapReached_RefusalIsServiceWideWithItsReason()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100))
            .AddGlobalLayer("global cost/day", PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Money).AsServiceWide().WithReason("daily cost cap reached"))
            .Build();
        Assert.True(policy.Acquire(new Call("alice"), new RequestCost(0, 800)).IsAcquired);

        PolicyLease refused = policy.Acquire(new Call("bob"), new RequestCost(0, 300));

        Assert.True(refused.IsServiceWide);
        Assert.Equal("global cost/day", refused.BlockingLayer);
        Assert.Equal("daily cost cap reached", refused.Reason);
        Assert.Equal(TimeSpan.FromHours(14), refused.RetryAfter); // until midnight UTC
        Assert.Equal(0, policy.GetUsage(new Call("bob"), "user").Used);
    }

    [Fact]
    public void Pause_EveryRequestRefusedServiceWide_UntilResume()
    {
        using RatePolicy<Call> policy = Builder().AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5)).Build();

        policy.Pause("maintenance");
        PolicyLease refused = policy.Acquire(new Call("alice"));
        policy.Resume();

        Assert.False(refused.IsAcquired);
        Assert.True(refused.IsServiceWide);
        Assert.Equal("maintenance", refused.Reason);
        Assert.Equal(0, policy.GetUsage(new Call("alice"), "user").Used);
        Assert.True(policy.Acquire(new Call("alice")).IsAcquired);
        Assert.False(policy.IsPaused);
    }

    [Fact]
    public async Task PauseAsync_InProcess_CompletesAtOnceAndResumeAsyncEndsIt()
    {
        using RatePolicy<Call> policy = Builder().AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5)).Build();

        ValueTask paused = policy.PauseAsync("maintenance");
        Assert.True(paused.IsCompletedSuccessfully);
        await paused;
        Assert.False(policy.Acquire(new Call("alice")).IsAcquired);
        await Assert.ThrowsAsync<ArgumentException>(async () => await policy.PauseAsync(" "));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await policy.ResumeAsync(new CancellationToken(canceled: true)));
        Assert.True(policy.IsPaused); // a cancelled resume changed nothing

        await policy.ResumeAsync();
        Assert.True(policy.Acquire(new Call("alice")).IsAcquired);
    }

    [Fact]
    public void Acquire_CostAboveALayersCap_RefusedNamingTheLayerAndNothingCounted()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();

        PolicyLease refused = policy.Acquire(new Call("alice"), new RequestCost(1_001, 0));

        Assert.Equal("tokens", refused.BlockingLayer);
        Assert.Contains("above the cap", refused.Reason, StringComparison.Ordinal);
        Assert.True(refused.IsPermanentRefusal);
        Assert.Null(refused.RetryAfter);
        Assert.Equal(0, policy.GetUsage(new Call("alice"), "user").Used);

        // A refusal by usage is not permanent.
        for (int i = 0; i < 5; i++)
        {
            policy.Acquire(new Call("alice"), new RequestCost(1, 0)).Dispose();
        }

        PolicyLease exhausted = policy.Acquire(new Call("alice"), new RequestCost(1, 0));
        Assert.Equal("user", exhausted.BlockingLayer);
        Assert.False(exhausted.IsPermanentRefusal);
    }

    [Fact]
    public void Acquire_NegativeEstimate_ThrowsArgumentOutOfRange()
    {
        using RatePolicy<Call> policy = Builder().AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5)).Build();

        Assert.Throws<ArgumentOutOfRangeException>(() => policy.Acquire(new Call("alice"), new RequestCost(-1, 0)));
    }

    [Fact]
    public void Acquire_KeySelectorReturnsNull_ThrowsAndNoLayerChanges()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddLayer("team", c => c.Team, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .Build();

        var exception = Assert.Throws<InvalidOperationException>(() => policy.Acquire(new Call("alice", Team: null!)));

        Assert.Contains("'team'", exception.Message, StringComparison.Ordinal);
        Assert.Equal(0, policy.GetUsage(new Call("alice"), "user").Used);
    }

    [Fact]
    public void Acquire_KeySelectorThrows_ExceptionPropagatesAndNoLayerChanges()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddLayer("broken", c => c.User == "alice" ? throw new FormatException("bad header") : c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .Build();

        Assert.Throws<FormatException>(() => policy.Acquire(new Call("alice")));

        Assert.Equal(0, policy.GetUsage(new Call("alice"), "user").Used);
    }

    /// <summary>A policy 2^33 windows old (1 ms windows): a new key's cells, and a new sub-key's, count from now's window.</summary>
    [Fact]
    public void Acquire_NewKeyJustBeforeTheEpochsWrap_EachWindowAdmitsItsLimit()
    {
        using RatePolicy<Call> policy = Builder()
            .WithIdleEvictionInterval(TimeSpan.FromDays(36_500))
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMilliseconds(1), 1))
            .AddNestedLayer("user tool", c => c.User, c => c.Team, PolicyRule.SlidingWindowCounter(TimeSpan.FromMilliseconds(2), 2, 1))
            .Build();
        _time.Advance(TimeSpan.FromMilliseconds((1L << 33) - 10));
        var call = new Call("alice");

        Assert.True(policy.Acquire(call).IsAcquired);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal("user tool", policy.Acquire(call).BlockingLayer);
        _time.Advance(TimeSpan.FromMilliseconds(2));
        Assert.True(policy.Acquire(call).IsAcquired);
    }

    /// <summary>
    /// A global layer built 2^33 windows after the policies' clock began (1 ms windows: 99 days) counts from now's window,
    /// as a key's cells do: a state at epoch 0 read as a window ahead and refused every request until then.
    /// </summary>
    [Fact]
    public void Acquire_GlobalLayerBuiltJustBeforeTheEpochsWrap_EachWindowAdmitsItsLimit()
    {
        using RatePolicy<Call> first = Builder() // starts the clock the policies on this provider share
            .WithIdleEvictionInterval(TimeSpan.FromDays(36_500))
            .AddGlobalLayer("first", PolicyRule.FixedWindow(TimeSpan.FromMilliseconds(1), 1))
            .Build();
        _time.Advance(TimeSpan.FromMilliseconds((1L << 33) - 10));
        using RatePolicy<Call> policy = Builder()
            .WithIdleEvictionInterval(TimeSpan.FromDays(36_500))
            .AddGlobalLayer("global", PolicyRule.FixedWindow(TimeSpan.FromMilliseconds(1), 1))
            .Build();
        var call = new Call("alice");

        Assert.True(policy.Acquire(call).IsAcquired);
        Assert.False(policy.Acquire(call).IsAcquired);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(policy.Acquire(call).IsAcquired);
    }

    /// <summary>
    /// A reservation reconciled 2^33 windows after it was made (1 ms windows: 99 days) frees nothing: its window is long
    /// over, and the current window, whose epoch is the same modulo 2^33, must not lose the permits it counted.
    /// </summary>
    [Fact]
    public void Reconcile_TwoToTheThirtyThreeWindowsLate_FreesNothingInTheCurrentWindow()
    {
        using RatePolicy<Call> policy = Builder()
            .WithIdleEvictionInterval(TimeSpan.FromDays(36_500))
            .AddGlobalLayer("global", PolicyRule.FixedWindow(TimeSpan.FromMilliseconds(1), 10).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        PolicyLease old = policy.Acquire(call, new RequestCost(10, 0)); // window 0: 10 of 10
        _time.Advance(TimeSpan.FromMilliseconds(1L << 21));
        using PolicyLease later = policy.Acquire(call, new RequestCost(1, 0)); // the layer's word leaves window 0
        _time.Advance(TimeSpan.FromMilliseconds((1L << 33) - (1L << 21)));
        using PolicyLease current = policy.Acquire(call, new RequestCost(10, 0)); // window 2^33: 10 of 10
        Assert.True(current.IsAcquired);

        old.Reconcile(new RequestCost(0, 0));

        Assert.Equal(10, policy.GetUsage(call, "global").Used);
        Assert.False(policy.Acquire(call, new RequestCost(10, 0)).IsAcquired);
    }

    [Fact]
    public void Acquire_TierWithoutALimit_RefusedWithAReasonAndNothingCounted()
    {
        using RatePolicy<Call> policy = Builder()
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["cost"] = 100 } })
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddLayer("cost", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money))
            .Build();

        PolicyLease unknown = policy.Acquire(new Call("alice", Tier: "platinum"), new RequestCost(0, 1));
        PolicyLease none = policy.Acquire(new Call("alice", Tier: null!), new RequestCost(0, 1));

        Assert.Equal("cost", unknown.BlockingLayer);
        Assert.Contains("tier", unknown.Reason, StringComparison.Ordinal);
        Assert.True(unknown.IsPermanentRefusal);
        Assert.False(none.IsAcquired);
        Assert.True(none.IsPermanentRefusal);
        Assert.Equal(0, policy.GetUsage(new Call("alice"), "user").Used);
    }

    [Fact]
    public void Acquire_TierSelectorThrows_ExceptionPropagatesAndNoLayerChanges()
    {
        using RatePolicy<Call> policy = Builder()
            .UseTiers(c => c.Tier == "bad" ? throw new KeyNotFoundException("no such account") : c.Tier, new PolicyTiers { ["free"] = { ["cost"] = 100 } })
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddLayer("cost", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money))
            .Build();

        Assert.Throws<KeyNotFoundException>(() => policy.Acquire(new Call("alice", Tier: "bad"), new RequestCost(0, 1)));

        Assert.Equal(0, policy.GetUsage(new Call("alice"), "user").Used);
    }

    [Fact]
    public void Reconcile_ActualBelowEstimate_RefundsTheDifferenceOnEveryWeightedLayer()
    {
        var records = new List<ReconcileRecord>();
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tokens/min", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10_000).Counting(PolicyMeter.Tokens))
            .AddLayer("cost/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000_000).Counting(PolicyMeter.Money))
            .OnReconciled(records.Add)
            .Build();
        var call = new Call("alice");
        using PolicyLease lease = policy.Acquire(call, new RequestCost(4_000, 40_000));

        RequestCost overrun = lease.Reconcile(new RequestCost(1_500, 15_000));

        Assert.Equal(RequestCost.None, overrun);
        Assert.Equal(1_500, policy.GetUsage(call, "tokens/min").Used);
        Assert.Equal(15_000, policy.GetUsage(call, "cost/day").Used);
        Assert.Equal(
            [new ReconcileRecord("tokens/min", "alice", PolicyMeter.Tokens, 4_000, 1_500, 0, 2_500), new ReconcileRecord("cost/day", "alice", PolicyMeter.Money, 40_000, 15_000, 0, 25_000)],
            records);
    }

    [Fact]
    public void Reconcile_AfterThePeriodEnded_RefundsNothing()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tokens/min", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10_000).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(4_000, 0));
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(policy.Acquire(call, new RequestCost(100, 0)).IsAcquired);

        lease.Reconcile(new RequestCost(1_000, 0));

        Assert.Equal(100, policy.GetUsage(call, "tokens/min").Used);
    }

    [Fact]
    public void Reconcile_ActualAboveEstimate_ChargesTheOverrunPastTheCapAndReportsIt()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(900, 0));

        RequestCost overrun = lease.Reconcile(new RequestCost(1_300, 0));

        Assert.Equal(new RequestCost(400, 0), overrun);
        LayerUsage usage = policy.GetUsage(call, "tokens/day");
        Assert.Equal(1_300, usage.Used);
        Assert.Equal(0, usage.Remaining);
        Assert.False(policy.Acquire(call, new RequestCost(1, 0)).IsAcquired);
        Assert.False(policy.Acquire(call).IsAcquired); // an estimate of 0 is still refused while the budget is spent
        _time.Advance(TimeSpan.FromHours(14)); // midnight UTC
        Assert.True(policy.Acquire(call, new RequestCost(1_000, 0)).IsAcquired);
    }

    [Fact]
    public void Reconcile_Twice_ThrowsInvalidOperation()
    {
        using RatePolicy<Call> policy = TokenPolicy();
        PolicyLease lease = policy.Acquire(new Call("alice"), new RequestCost(10, 0));
        lease.Reconcile(new RequestCost(5, 0));

        Assert.Throws<InvalidOperationException>(() => lease.Reconcile(new RequestCost(5, 0)));
        Assert.Equal(5, policy.GetUsage(new Call("alice"), "tokens").Used);
    }

    [Fact]
    public void Reconcile_RefusedLease_ThrowsInvalidOperation()
    {
        using RatePolicy<Call> policy = TokenPolicy();
        PolicyLease refused = policy.Acquire(new Call("alice"), new RequestCost(2_000, 0));

        Assert.Throws<InvalidOperationException>(() => refused.Reconcile(new RequestCost(1, 0)));
        Assert.Throws<InvalidOperationException>(() => refused.Charge(new RequestCost(1, 0)));
    }

    [Fact]
    public void Reconcile_NegativeActual_ThrowsArgumentOutOfRangeAndChangesNothing()
    {
        using RatePolicy<Call> policy = TokenPolicy();
        PolicyLease lease = policy.Acquire(new Call("alice"), new RequestCost(10, 0));

        Assert.Throws<ArgumentOutOfRangeException>(() => lease.Reconcile(new RequestCost(-1, 0)));
        Assert.Equal(10, policy.GetUsage(new Call("alice"), "tokens").Used);
        lease.Reconcile(new RequestCost(3, 0));
        Assert.Equal(3, policy.GetUsage(new Call("alice"), "tokens").Used);
    }

    [Fact]
    public void Reconcile_AfterThePolicyIsDisposed_ThrowsObjectDisposed()
    {
        RatePolicy<Call> policy = TokenPolicy();
        PolicyLease lease = policy.Acquire(new Call("alice"), new RequestCost(10, 0));
        policy.Dispose();

        Assert.Throws<ObjectDisposedException>(() => lease.Reconcile(new RequestCost(1, 0)));
        Assert.Throws<ObjectDisposedException>(() => policy.Acquire(new Call("alice")));
    }

    [Fact]
    public void Dispose_WithoutReconcile_KeepsTheEstimate()
    {
        using RatePolicy<Call> policy = TokenPolicy();
        PolicyLease lease = policy.Acquire(new Call("alice"), new RequestCost(300, 0));

        lease.Dispose();
        lease.Dispose();

        Assert.Equal(300, policy.GetUsage(new Call("alice"), "tokens").Used);
        Assert.Throws<InvalidOperationException>(() => lease.Reconcile(new RequestCost(1, 0)));
    }

    [Fact]
    public void Dispose_OnALayerThatRefundsUnreconciled_GivesTheEstimateBack()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .AddLayer("kept", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();

        policy.Acquire(new Call("alice"), new RequestCost(300, 0)).Dispose();

        Assert.Equal(0, policy.GetUsage(new Call("alice"), "tokens").Used);
        Assert.Equal(300, policy.GetUsage(new Call("alice"), "kept").Used);
    }

    [Fact]
    public void Reconcile_OnACounterLayerAfterItsSegmentRolledOver_RefundsTheDifference()
    {
        // A call longer than one segment: another request of the user moves the counter on before the reconcile, and the
        // 3,000 tokens not spent must still come back while the window counts them.
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tpm", c => c.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 10_000).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(4_000, 0));
        _time.Advance(TimeSpan.FromSeconds(10));
        policy.Acquire(call, new RequestCost(100, 0)).Dispose();

        lease.Reconcile(new RequestCost(1_000, 0));

        Assert.Equal(1_100, policy.GetUsage(call, "tpm").Used);
    }

    [Theory]
    [InlineData(600, 600)] // within the estimate: those 600 were spent, the other 400 come back
    [InlineData(1_500, 1_500)] // past it: the whole estimate was spent, and the overrun with it
    public void Dispose_OnALayerThatRefundsUnreconciled_KeepsWhatStepsConsumed(long charged, long counted)
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .AddLayer("requests", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10).RefundingUnreconciled())
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(1_000, 0));
        lease.Charge(new RequestCost(charged, 0));

        lease.Dispose();

        Assert.Equal(counted, policy.GetUsage(call, "tokens").Used);
        Assert.Equal(0, policy.GetUsage(call, "requests").Used); // a request layer gives its request back
    }

    [Fact]
    public void Reconcile_ClockThrows_LeavesTheLeaseOpenToBeReconciledAgain()
    {
        // A provider that throws on the reconcile's clock read: the lease was marked settled first, so the overrun was
        // never charged and no second reconcile could charge it.
        var time = new FailingClock();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(100, 0));

        time.Failing = true;
        Assert.Throws<TimeoutException>(() => lease.Reconcile(new RequestCost(150, 0)));
        time.Failing = false;
        Assert.False(lease.IsSettled);
        lease.Reconcile(new RequestCost(150, 0));

        Assert.Equal(150, policy.GetUsage(call, "tokens").Used);
    }

    [Fact]
    public void Acquire_TiersUpdatedDuringItsLookup_IsJudgedByOneVersion()
    {
        // Neither version admits 15,000 tokens and 80,000 in cost (v1's cost cap is 50,000, v2's token cap 10,000), but
        // judged by v1 on the first layer and v2 on the second it passed both. The update lands mid-lookup here through
        // the second layer's tier selector, as it would from another thread.
        var v1 = new PolicyTiers { ["free"] = { ["tokens/day"] = 20_000, ["cost/day"] = 50_000 } };
        var v2 = new PolicyTiers { ["free"] = { ["tokens/day"] = 10_000, ["cost/day"] = 100_000 } };
        RatePolicy<Call>? policy = null;
        bool updated = false;
        policy = new RatePolicyBuilder<Call>().UseTimeProvider(new FakeTimeProvider())
            .UseTiers(_ => "free", v1)
            .AddLayer("tokens/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Tokens))
            .AddLayer("cost/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money), tierSelector: _ =>
            {
                if (!updated)
                {
                    updated = true;
                    policy!.UpdateTiers(v2);
                }

                return "free";
            })
            .Build();
        using (policy)
        {
            using PolicyLease lease = policy.Acquire(new Call("alice"), new RequestCost(15_000, 80_000));

            Assert.True(updated);
            Assert.False(lease.IsAcquired);
            Assert.Equal("tokens/day", lease.BlockingLayer); // v2's token cap
            Assert.Equal(10_000, policy.GetTiers()["free"]["tokens/day"]);
        }
    }

    [Fact]
    public void Charge_ClockThrows_TheStepChargedAgainCountsOnce()
    {
        var time = new FailingClock();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        using PolicyLease lease = policy.Acquire(call, new RequestCost(100, 0));
        lease.Charge(new RequestCost(90, 0));

        time.Failing = true;
        Assert.Throws<TimeoutException>(() => lease.Charge(new RequestCost(20, 0)));
        time.Failing = false;
        lease.Charge(new RequestCost(20, 0)); // the caller charges the step again

        Assert.Equal(110, lease.Consumed.Tokens);
        Assert.Equal(110, policy.GetUsage(call, "tokens").Used); // the estimate and an overrun of 10, not 30
    }

    [Fact]
    public void Dispose_ClockThrowsInARefund_StillFreesTheSlotsAndEndsTheLease()
    {
        var time = new FailingClock();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("requests", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10).RefundingUnreconciled())
            .AddLayer("streams", c => c.User, PolicyRule.Concurrency(1))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, RequestCost.None);

        time.Failing = true;
        Assert.Throws<TimeoutException>(lease.Dispose);
        time.Failing = false;

        using PolicyLease next = policy.Acquire(call, RequestCost.None);
        Assert.True(next.IsAcquired, "the stream slot stayed held");
        lease.Dispose(); // ended: nothing more happens
        Assert.Equal(1, policy.GetUsage(call, "streams").Used);
    }

    [Fact]
    public void Acquire_KeyEvictedMidDecisionAndTheTableFull_SaysPartitionsFullNotTheLimit()
    {
        // Alice's key is made in the lookup phase; before her clock read, bob's request finds the one-key table full, sweeps
        // alice's idle key out and takes its place. Alice's decision then finds no room for her key again: that is what her
        // refusal must say, not that her limit was reached (a client told so would think its budget spent).
        var time = new ReadHookClock();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10), comparer: new OneHash())
            .WithMaxKeysPerLayer(1)
            .Build();
        PolicyLease? bobs = null;
        time.OnRead = read =>
        {
            if (read == 2)
            {
                bobs = policy.Acquire(new Call("bob"), RequestCost.None);
            }
        };

        using PolicyLease alices = policy.Acquire(new Call("alice"), RequestCost.None);

        Assert.True(bobs!.IsAcquired, bobs.Reason);
        Assert.False(alices.IsAcquired);
        Assert.Equal(ReasonPhrases.PartitionsFull, alices.Reason);
        Assert.Null(alices.RetryAfter);
        bobs.Dispose();
    }

    [Fact]
    public void Acquire_ZeroEstimateReadOnAnEvictedEntry_IsDecidedOnTheKeysLiveEntry()
    {
        // Alice's request without an estimate finds her idle entry; before its clock read the sweep evicts that entry and
        // another request of hers makes a new one and takes the whole window. The dead entry reads "room left" (only idle
        // entries are evicted): an admission read there let the request in on a spent window, and its charge past the cap.
        var time = new ReadHookClock();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var alice = new Call("alice");
        policy.Acquire(alice, RequestCost.None).Dispose(); // her entry is made, and counts nothing: idle
        PolicyLease? spender = null;
        time.OnRead = read =>
        {
            if (read == 1) // the request's clock read, after its lookup found the entry
            {
                policy.SweepAll();
                spender = policy.Acquire(alice, new RequestCost(1_000, 0));
            }
        };

        using PolicyLease probe = policy.Acquire(alice, RequestCost.None);
        time.OnRead = null;

        Assert.True(spender!.IsAcquired, spender.Reason);
        Assert.False(probe.IsAcquired);
        Assert.Equal("tokens", probe.BlockingLayer);
        Assert.Equal(1_000, policy.GetUsage(alice, "tokens").Used);
        spender.Dispose();
    }

    [Fact]
    public void SweepAll_StalledPast2To20WindowsWhileTheKeyFillsItsWindow_DoesNotEvictIt()
    {
        // As for the partitioned limiter: a sweep that found alice's key idle and then stalled (or saw the clock step
        // forward) more than 2^20 windows before its mark, while a request filled her window, re-checked at its first
        // reading and read the busy window as one far behind: the key went, and its new entry admitted the window again.
        var time = new FakeTimeProvider();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMilliseconds(1), 100))
            .WithIdleEvictionInterval(TimeSpan.FromDays(3_650)) // no timer sweep while the fake clock jumps: only the one below
            .Build();
        var alice = new Call("alice");
        policy.Acquire(alice, RequestCost.None).Dispose();
        time.Advance(TimeSpan.FromMilliseconds(3)); // idle
        bool stalled = false;
        policy.KeyTables[0].BeforeEvictionMark = () =>
        {
            if (!stalled)
            {
                stalled = true;
                time.Advance(TimeSpan.FromMilliseconds((1 << 20) + 1));
                for (int i = 0; i < 100; i++)
                {
                    policy.Acquire(alice, RequestCost.None).Dispose(); // on the entry the sweep is looking at
                }
            }
        };

        policy.SweepAll();
        policy.KeyTables[0].BeforeEvictionMark = null;

        Assert.True(stalled);
        using PolicyLease refused = policy.Acquire(alice, RequestCost.None);
        Assert.False(refused.IsAcquired); // the window is full: not a new entry's
        Assert.Equal(100, policy.GetUsage(alice, "user").Used);
    }

    [Fact]
    public void Acquire_FifthKeyOfOneHash_IsRefusedForTheCollisionNotAsPartitionsFull()
    {
        // The table takes at most four live keys of one 32-bit hash: a fifth is refused, and the refusal says why (a
        // degenerate or hostile hash code), not that the table is full, which would send an operator after the wrong cause.
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(new FakeTimeProvider())
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10), comparer: new OneHash())
            .Build();
        for (int user = 0; user < 4; user++)
        {
            Assert.True(policy.Acquire(new Call($"user-{user}"), RequestCost.None).IsAcquired);
        }

        using PolicyLease refused = policy.Acquire(new Call("user-4"), RequestCost.None);
        Assert.False(refused.IsAcquired);
        Assert.Equal(ReasonPhrases.TooManyCollisions, refused.Reason);

        // A flood of further keys of that hash is refused the same way (without the shard's lock: the partitioned limiter's
        // test counts that, through the same table), and the four keys in keep their cells.
        for (int user = 5; user < 1_005; user++)
        {
            using PolicyLease again = policy.Acquire(new Call($"user-{user}"), RequestCost.None);
            Assert.Equal(ReasonPhrases.TooManyCollisions, again.Reason);
        }

        Assert.Equal(1, policy.GetUsage(new Call("user-0"), "user").Used);
        Assert.True(policy.Acquire(new Call("user-0"), RequestCost.None).IsAcquired);
    }

    /// <summary>Every key in one shard (and one hash), so that a key's room sweep reaches the other key.</summary>
    private sealed class OneHash : IEqualityComparer<string>
    {
        public bool Equals(string? x, string? y) => string.Equals(x, y, StringComparison.Ordinal);

        public int GetHashCode(string obj) => 42;
    }

    /// <summary>A fake clock that calls <see cref="OnRead"/> with each read's number (from 1), once the read is taken.</summary>
    private sealed class ReadHookClock : FakeTimeProvider
    {
        private int _reads;
        private bool _inHook;

        public Action<int>? OnRead { get; set; }

        public override long GetTimestamp()
        {
            long read = base.GetTimestamp();
            if (!_inHook && OnRead is { } hook)
            {
                _inHook = true;
                try
                {
                    hook(++_reads);
                }
                finally
                {
                    _inHook = false;
                }
            }

            return read;
        }
    }

    [Fact]
    public void SweepTimer_ClockThrows_SkipsTheShardAndSweepsLater()
    {
        // The policy's sweep runs on a timer thread, where an exception would end the process: one that throws is skipped.
        var time = new FailingClock();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("requests", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .WithIdleEvictionInterval(TimeSpan.FromSeconds(64))
            .Build();
        policy.Acquire(new Call("alice"), RequestCost.None).Dispose();

        time.Failing = true;
        time.Advance(TimeSpan.FromSeconds(130)); // every shard's sweep reads the clock and throws; none may escape
        time.Failing = false;

        time.Advance(TimeSpan.FromSeconds(130));
        using PolicyLease lease = policy.Acquire(new Call("alice"), RequestCost.None);
        Assert.True(lease.IsAcquired);
    }

    [Theory]
    [InlineData(500)]
    [InlineData(60)]
    public void Reconcile_ListenerThrowsPartWay_EveryLayerIsSettledAndDisposeRefundsNothingMore(long actual)
    {
        // The reconcile listener throws on the first layer's record. Both layers must still end at the actual cost: a
        // dispose after the failed reconcile must not refund the estimate of a layer that refunds unreconciled ones.
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000_000).Counting(PolicyMeter.Tokens).RefundingUnreconciled())
            .AddLayer("tokens/min", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000_000).Counting(PolicyMeter.Tokens))
            .OnReconciled(_ => throw new FormatException("listener bug"))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(100, 0));

        Assert.Throws<FormatException>(() => lease.Reconcile(new RequestCost(actual, 0)));
        lease.Dispose();

        Assert.Equal(actual, policy.GetUsage(call, "tokens/day").Used);
        Assert.Equal(actual, policy.GetUsage(call, "tokens/min").Used);
        Assert.Throws<InvalidOperationException>(() => lease.Reconcile(new RequestCost(actual, 0)));
    }

    [Fact]
    public void Acquire_OneOfTwoThresholdListenersThrows_TheOtherIsToldOnce()
    {
        // Listeners combine into one delegate; called as one, the first was told, the second threw, the threshold went back
        // to unreported, and the next crossing told the first again: twice in one period.
        var told = new List<ThresholdCrossing>();
        int failures = 1;
        using RatePolicy<Call> policy = Builder()
            .AddLayer("token alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens).AsSoft(0.5))
            .OnThresholdCrossed(told.Add)
            .OnThresholdCrossed(_ =>
            {
                if (failures-- > 0)
                {
                    throw new FormatException("metrics bug");
                }
            })
            .Build();
        var call = new Call("alice");

        Assert.Throws<FormatException>(() => policy.Acquire(call, new RequestCost(600, 0)));
        using PolicyLease second = policy.Acquire(call, new RequestCost(600, 0));

        Assert.True(second.IsAcquired);
        Assert.Single(told);
    }

    [Fact]
    public void Reconcile_OneOfTwoReconcileListenersThrows_TheOtherStillGetsTheRecord()
    {
        var records = new List<ReconcileRecord>();
        using RatePolicy<Call> policy = Builder()
            .AddLayer("tokens/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
            .OnReconciled(_ => throw new FormatException("listener bug"))
            .OnReconciled(records.Add)
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(100, 0));

        Assert.Throws<FormatException>(() => lease.Reconcile(new RequestCost(40, 0)));

        Assert.Equal(40, Assert.Single(records).Actual);
        Assert.Equal(40, policy.GetUsage(call, "tokens/day").Used);
    }

    [Fact]
    public void Charge_KeyEvictedWhileTheTableWasFull_TheNextChargeCountsOnceThereIsRoom()
    {
        // A stream's key is evicted as idle and its place taken; the next step finds no room to count on. The lease must
        // look again at its next step, and count what it owes then (the step that found no room included: it was spent).
        // Before, it gave its key up for good, and every later step and the reconcile's overrun went uncounted.
        var time = new FakeTimeProvider();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .WithMaxKeysPerLayer(1)
            .Build();
        var ann = new Call("ann");
        PolicyLease stream = policy.Acquire(ann, new RequestCost(10, 0));
        time.Advance(TimeSpan.FromMinutes(2));
        policy.SweepAll();
        using (PolicyLease bobs = policy.Acquire(new Call("bob"), new RequestCost(1, 0)))
        {
            Assert.True(bobs.IsAcquired);
        }

        stream.Charge(new RequestCost(60, 0)); // 50 past the estimate, while bob's key holds the one place
        time.Advance(TimeSpan.FromMinutes(2)); // bob's key idle: room again
        stream.Charge(new RequestCost(30, 0));

        Assert.Equal(50 + 30, policy.GetUsage(ann, "tokens").Used);
        stream.Dispose();
    }

    [Fact]
    public void Charge_ThresholdListenerThrows_EveryLayerIsStillCharged()
    {
        // A soft layer's threshold listener throws while a step past the estimate is charged: the hard layer after it must
        // count the step too (it was spent), and the exception still reaches the caller.
        using RatePolicy<Call> policy = Builder()
            .AddLayer("token alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens).AsSoft(0.5))
            .AddLayer("tokens/min", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10_000).Counting(PolicyMeter.Tokens))
            .OnThresholdCrossed(_ => throw new FormatException("listener bug"))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(100, 0));

        Assert.Throws<FormatException>(() => lease.Charge(new RequestCost(700, 0)));

        Assert.Equal(700, policy.GetUsage(call, "token alerts").Used);
        Assert.Equal(700, policy.GetUsage(call, "tokens/min").Used);
    }

    [Fact]
    public void Reconcile_SoftLayerChargedPastWhatItCanCount_RefundsNoMoreThanItCounted()
    {
        // A soft layer never refuses, so a request may reserve more than the layer can count (its count saturates). A
        // reconcile to zero must give back what was counted, not the whole estimate: the usage must not go below zero.
        using RatePolicy<Call> policy = Builder()
            .AddLayer("cost alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Money).AsSoft(1.0))
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(0, long.MaxValue));
        Assert.True(lease.IsAcquired);

        lease.Reconcile(RequestCost.None);

        Assert.Equal(0, policy.GetUsage(call, "cost alerts").Used);
        Assert.Equal(0, policy.GetUsage(new Call("bob"), "cost alerts").Used);
    }

    [Fact]
    public void Reconcile_WhatWasConsumed_RacingAStepCharge_SettlesExactlyWhatTheLeaseConsumed()
    {
        // One thread charges a step past the estimate while another settles at what was consumed: whichever comes first,
        // the layer must end at the lease's final Consumed (a step charged after the reconcile is refused, not lost).
        using RatePolicy<Call> policy = TokenPolicy();
        for (int round = 0; round < 2_000; round++)
        {
            var call = new Call("user" + round);
            PolicyLease lease = policy.Acquire(call, new RequestCost(100, 0));
            lease.Charge(new RequestCost(400, 0));
            using var start = new Barrier(2);
            var charger = new Thread(() =>
            {
                start.SignalAndWait();
                try
                {
                    lease.Charge(new RequestCost(300, 0));
                }
                catch (InvalidOperationException)
                {
                    // reconciled first: the step is refused
                }
            });
            charger.Start();
            start.SignalAndWait();
            lease.Reconcile();
            charger.Join();

            Assert.Equal(lease.Consumed.Tokens, policy.GetUsage(call, "tokens").Used);
            lease.Dispose();
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Acquire_AFullConcurrencyLayerRefusesWithAWindowLayer_PromisesNoRetryAfter(bool concurrencyFirst)
    {
        // The window frees in a second, the slot when the stream ends: a RETRY_AFTER of a second would be short.
        RatePolicyBuilder<Call> builder = Builder();
        builder = concurrencyFirst ? builder.AddLayer("streams", c => c.User, PolicyRule.Concurrency(1)) : builder;
        builder = builder.AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1));
        builder = concurrencyFirst ? builder : builder.AddLayer("streams", c => c.User, PolicyRule.Concurrency(1));
        using RatePolicy<Call> policy = builder.Build();
        var call = new Call("alice");
        using PolicyLease stream = policy.Acquire(call);
        Assert.True(stream.IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(59));

        using PolicyLease refused = policy.Acquire(call);

        Assert.Equal(concurrencyFirst ? "streams" : "user", refused.BlockingLayer);
        Assert.Null(refused.RetryAfter);
        Assert.False(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan _));
        Assert.Equal(TimeSpan.FromSeconds(1), refused.MinimumRetryAfter); // not sooner than the window: a lower bound
    }

    [Fact]
    public void Concurrency_SlotFreedWhenTheLeaseIsDisposed_AfterReconcileToo()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("streams", c => c.User, PolicyRule.Concurrency(2))
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        PolicyLease first = policy.Acquire(call, new RequestCost(1, 0));
        PolicyLease second = policy.Acquire(call, new RequestCost(1, 0));
        PolicyLease third = policy.Acquire(call, new RequestCost(1, 0));
        Assert.Equal("streams", third.BlockingLayer);
        Assert.Null(third.RetryAfter); // a slot frees when a lease is disposed: no delay to promise

        first.Reconcile(new RequestCost(1, 0));
        Assert.False(policy.Acquire(call, new RequestCost(1, 0)).IsAcquired);
        first.Dispose();

        Assert.True(policy.Acquire(call, new RequestCost(1, 0)).IsAcquired);
        Assert.Equal(2, policy.GetUsage(call, "streams").Used);
        GC.KeepAlive(second);
    }

    [Fact]
    public void Concurrency_LeaseNeverDisposed_SlotFreedWhenCollectedAndReported()
    {
        var abandoned = new List<AbandonedLease>();
        using RatePolicy<Call> policy = Builder()
            .AddLayer("streams", c => c.User, PolicyRule.Concurrency(1))
            .OnLeaseAbandoned(report =>
            {
                lock (abandoned)
                {
                    abandoned.Add(report);
                }
            })
            .Build();
        var call = new Call("alice");
        AcquireAndDrop(policy, call);
        Assert.False(policy.Acquire(call).IsAcquired);

        GC.Collect();
        GC.WaitForPendingFinalizers();

        Assert.True(policy.Acquire(call).IsAcquired);
        lock (abandoned)
        {
            Assert.Equal(["streams"], Assert.Single(abandoned).ReleasedLayers);
        }
    }

    [Fact]
    public void Concurrency_LeaseNeverDisposed_EveryAbandonListenerHearsOfItThoughOneThrows()
    {
        int heard = 0;
        using RatePolicy<Call> policy = Builder()
            .AddLayer("streams", c => c.User, PolicyRule.Concurrency(1))
            .OnLeaseAbandoned(_ => throw new FormatException("listener bug"))
            .OnLeaseAbandoned(_ => Interlocked.Increment(ref heard))
            .Build();
        var call = new Call("alice");
        AcquireAndDrop(policy, call);

        GC.Collect();
        GC.WaitForPendingFinalizers();

        Assert.True(policy.Acquire(call).IsAcquired);
        Assert.Equal(1, Volatile.Read(ref heard));
    }

    [Fact]
    public void AsSoft_ThresholdPastWhatTheLayerCanCount_IsRefused()
    {
        // A fixed window counts at most 2^31 - 1 in a window: 120 % of 2e9 would never be reported.
        PolicyRule rule = PolicyRule.FixedWindow(TimeSpan.FromHours(1), 2_000_000_000).Counting(PolicyMeter.Tokens);
        Assert.Equal("thresholds", Assert.Throws<ArgumentOutOfRangeException>(() => rule.AsSoft(1.0, 1.2)).ParamName);
        Assert.Equal([1.0, 1.07], rule.AsSoft(1.0, 1.07).SoftThresholds);

        var tiers = new PolicyTiers { ["big"] = { ["alerts"] = 2_000_000_000 } };
        RatePolicyBuilder<Call> builder = Builder()
            .UseTiers(c => c.Tier, tiers)
            .AddLayer("alerts", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromHours(1)).Counting(PolicyMeter.Tokens).AsSoft(1.0, 1.2));
        Assert.Equal("tiers", Assert.Throws<ArgumentOutOfRangeException>(() => builder.Build()).ParamName);
    }

    [Fact]
    public void SoftLayer_ThresholdJustAboveALimit_IsReportedOnlyPastIt()
    {
        // 1.001 of a limit of 1,000,000 is 1,001,000: truncated to a millionth (1,000,999), it was reported 1 unit early.
        var crossings = new List<ThresholdCrossing>();
        using RatePolicy<Call> policy = Builder()
            .AddLayer("cost alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000_000).Counting(PolicyMeter.Money).AsSoft(1.001))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        var call = new Call("alice");

        policy.Acquire(call, new RequestCost(0, 1_000_999)).Dispose();
        Assert.Empty(crossings);
        policy.Acquire(call, new RequestCost(0, 1)).Dispose();
        Assert.Equal(1.001, Assert.Single(crossings).Threshold);
    }

    [Fact]
    public void Charge_StepsBeyondTheEstimate_ChargedAsOverrunAsTheyHappen()
    {
        using RatePolicy<Call> policy = TokenPolicy();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(500, 0));

        lease.Charge(new RequestCost(300, 0));
        Assert.Equal(500, policy.GetUsage(call, "tokens").Used); // within the reservation
        lease.Charge(new RequestCost(400, 0));
        Assert.Equal(700, policy.GetUsage(call, "tokens").Used); // 200 past it, counted at once

        RequestCost overrun = lease.Reconcile();

        Assert.Equal(new RequestCost(200, 0), overrun);
        Assert.Equal(new RequestCost(700, 0), lease.Consumed);
        Assert.Equal(700, policy.GetUsage(call, "tokens").Used);
    }

    [Fact]
    public async Task ReconcileConsumedAsync_SettlesAtWhatTheStepsCharged_AndIsSettledSaysSo()
    {
        using RatePolicy<Call> policy = TokenPolicy();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(500, 0));
        lease.Charge(new RequestCost(120, 0));
        Assert.False(lease.IsSettled);

        Assert.Equal(RequestCost.None, await lease.ReconcileConsumedAsync());

        Assert.True(lease.IsSettled);
        Assert.Equal(120, policy.GetUsage(call, "tokens").Used);
        PolicyLease disposed = policy.Acquire(call, new RequestCost(10, 0));
        disposed.Dispose();
        Assert.True(disposed.IsSettled);
        Assert.False(policy.Acquire(call, new RequestCost(100_000, 0)).IsSettled); // a refusal holds nothing to settle
    }

    [Fact]
    public void Reconcile_StreamCancelledPartWay_SettlesWhatWasProduced()
    {
        using RatePolicy<Call> policy = TokenPolicy();
        var call = new Call("alice");
        using (PolicyLease lease = policy.Acquire(call, new RequestCost(900, 0)))
        {
            using var disconnect = new CancellationTokenSource();
            try
            {
                for (int chunk = 0; chunk < 9; chunk++)
                {
                    if (chunk == 3)
                    {
                        disconnect.Cancel();
                    }

                    disconnect.Token.ThrowIfCancellationRequested();
                    lease.Charge(new RequestCost(100, 0));
                }
            }
            catch (OperationCanceledException)
            {
                lease.Reconcile();
            }
        }

        Assert.Equal(300, policy.GetUsage(call, "tokens").Used);
    }

    [Fact]
    public void Soft_ThresholdsReportedOncePerPeriodAndNeverRefuses()
    {
        var crossings = new List<ThresholdCrossing>();
        using RatePolicy<Call> policy = Builder()
            .AddLayer("alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Money).AsSoft(0.5, 0.8, 1.0, 1.2))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        var call = new Call("alice");

        for (int i = 0; i < 13; i++)
        {
            Assert.True(policy.Acquire(call, new RequestCost(0, 10)).IsAcquired);
        }

        Assert.Equal([0.5, 0.8, 1.0, 1.2], crossings.Select(c => c.Threshold));
        Assert.All(crossings, c => Assert.Equal("alice", c.Key));
        _time.Advance(TimeSpan.FromHours(14));
        policy.Acquire(call, new RequestCost(0, 60));
        Assert.Equal([0.5, 0.8, 1.0, 1.2, 0.5], crossings.Select(c => c.Threshold));
    }

    [Fact]
    public void Soft_ANextPeriodBegunBeforeTheReport_TheCrossingIsStillReported()
    {
        // A request reaches 100 % of the day at 23:59:59.999; before its layer reports, another request past midnight
        // starts the next day. The report read the key's usage then, found the new day's 1, and the crossing was lost.
        var crossings = new List<ThresholdCrossing>();
        bool nested = false;
        RatePolicy<Call>? policy = null;
        var call = new Call("alice");
        policy = Builder()
            .AddLayer("trigger", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 10).Counting(PolicyMeter.Money).AsSoft(0.1))
            .AddLayer("budget", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Money).AsSoft(1.0))
            .OnThresholdCrossed(crossing =>
            {
                crossings.Add(crossing);
                if (crossing.Layer == "trigger" && !nested)
                {
                    nested = true;
                    _time.Advance(TimeSpan.FromMilliseconds(2)); // past midnight
                    Assert.True(policy!.Acquire(call, new RequestCost(0, 1)).IsAcquired);
                }
            })
            .Build();
        using (policy)
        {
            _time.Advance(TimeSpan.FromHours(14) - TimeSpan.FromMilliseconds(1)); // 23:59:59.999 UTC
            Assert.True(policy.Acquire(call, new RequestCost(0, 100)).IsAcquired);

            ThresholdCrossing budget = Assert.Single(crossings, c => c.Layer == "budget");
            Assert.Equal(1.0, budget.Threshold);
            Assert.Equal(100, budget.Used);
        }
    }

    [Fact]
    public void Charge_ListenerDisposesTheLeaseAndAcquiresAgain_ChargesEveryLayerAndLeavesTheNewLeaseIntact()
    {
        // A lease's holds go back to the thread's spares when it ends. A listener that disposes the lease in the middle of
        // its charge must not end the charge early (the later layers would never count the step), nor let the request it
        // then makes on this thread take holds the charge still writes.
        PolicyLease? charging = null;
        PolicyLease? again = null;
        RatePolicy<Call>? policy = null;
        var call = new Call("alice");
        policy = Builder()
            .AddLayer("alerts", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100).Counting(PolicyMeter.Tokens).AsSoft(0.5))
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .OnThresholdCrossed(_ =>
            {
                charging!.Dispose();
                again ??= policy!.Acquire(call, new RequestCost(10, 0));
            })
            .Build();
        using (policy)
        {
            charging = policy.Acquire(call, new RequestCost(10, 0));

            charging.Charge(new RequestCost(60, 0)); // 50 past the estimate: alerts reach 60 of 100, past their 50 %

            Assert.Equal(60 + 10, policy.GetUsage(call, "tokens").Used); // the step, and the new request's estimate
            Assert.True(again!.IsAcquired);
            again.Reconcile(new RequestCost(4, 0));
            Assert.Equal(60 + 4, policy.GetUsage(call, "tokens").Used);
            Assert.Equal(60 + 4, policy.GetUsage(call, "alerts").Used);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Charge_ListenerReconcilesTheLease_LaterLayersStaySettledAtTheActual(bool thenDisposes)
    {
        PolicyLease? charging = null;
        using RatePolicy<Call> policy = Builder()
            .AddLayer("alerts", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100).Counting(PolicyMeter.Tokens).AsSoft(0.5))
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .OnThresholdCrossed(_ =>
            {
                charging!.Reconcile(new RequestCost(20, 0));
                if (thenDisposes)
                {
                    charging.Dispose();
                }
            })
            .Build();
        var call = new Call("alice");
        charging = policy.Acquire(call, new RequestCost(10, 0));

        charging.Charge(new RequestCost(60, 0)); // alerts reach 60 of 100, past their 50 %: the listener settles at 20

        Assert.Equal(20, policy.GetUsage(call, "tokens").Used); // not charged the step again after the reconcile
        Assert.Equal(50, policy.GetUsage(call, "alerts").Used); // the overrun it counted stays: a refund gives back at most the 10 reserved
        Assert.True(charging.IsSettled);
    }

    [Fact]
    public void Acquire_AfterALeaseARefusalAndAProbeOnThisThread_CountsOnItsOwnKey()
    {
        // Each of these gives its holds back to the thread's spares: the next request must not find another's key in them.
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .Build();
        using PartitionedRateLimiter<Call> limiter = policy.AsRateLimiter();
        var alice = new Call("alice");
        var (bob, carol, dave) = (new Call("bob"), new Call("carol"), new Call("dave"));

        policy.Acquire(alice, new RequestCost(10, 0)).Dispose();
        Assert.True(policy.Acquire(bob, new RequestCost(20, 0)).IsAcquired);
        Assert.False(policy.Acquire(alice, new RequestCost(10, 0)).IsAcquired); // refused by "user"
        Assert.True(policy.Acquire(carol, new RequestCost(30, 0)).IsAcquired);
        limiter.AttemptAcquire(alice, 0).Dispose(); // a probe
        Assert.True(policy.Acquire(dave, new RequestCost(40, 0)).IsAcquired);

        Assert.Equal([1, 1, 1, 1], new[] { alice, bob, carol, dave }.Select(c => policy.GetUsage(c, "user").Used));
        Assert.Equal([10, 20, 30, 40], new[] { alice, bob, carol, dave }.Select(c => policy.GetUsage(c, "tokens").Used));
    }

    [Fact]
    public void Acquire_SuccessReconciledAndDisposed_AllocatesTheLeaseAlone()
    {
        // Five layers, as the README's policy has: the holds (72 bytes a layer) come from the thread's spares.
        using RatePolicy<Call> policy = Builder()
            .AddLayer("ip", c => c.Ip, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000_000))
            .AddLayer("user", c => c.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 1_000_000))
            .AddNestedLayer("tool", c => c.User, c => c.Team, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000_000))
            .AddLayer("tokens", c => c.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 1_000_000).Counting(PolicyMeter.Tokens))
            .AddLayer("cents", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000_000_000).Counting(PolicyMeter.Money))
            .Build();
        var call = new Call("alice");
        var estimate = new RequestCost(50, 50);
        var actual = new RequestCost(10, 10);
        for (int i = 0; i < 10; i++)
        {
            policy.Acquire(call, estimate).Dispose(); // the key's entries, and the thread's spare holds
        }

        long allocated = Allocation.LeastOnThisThread(() =>
        {
            for (int i = 0; i < 100; i++)
            {
                using PolicyLease lease = policy.Acquire(call, estimate);
                lease.Reconcile(actual);
            }
        });

        Assert.InRange(allocated / 100, 1, 128); // the lease and its lock (112 bytes); with its holds, 496
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Soft_KeyBackToZeroUsageAndSwept_DoesNotReportAThresholdTwiceInOnePeriod(bool calendar)
    {
        // A reservation crosses 50 %, its reconcile takes the usage back to 0 (the upstream call failed), and the key sits
        // idle through a sweep: the period's record of what was reported must survive it.
        var crossings = new List<ThresholdCrossing>();
        PolicyRule rule = calendar ? PolicyRule.Calendar(CalendarPeriod.Day, 100) : PolicyRule.FixedWindow(TimeSpan.FromHours(1), 100);
        using RatePolicy<Call> policy = Builder()
            .AddLayer("alerts", c => c.User, rule.Counting(PolicyMeter.Money).AsSoft(0.5))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        var call = new Call("alice");
        PolicyLease lease = policy.Acquire(call, new RequestCost(0, 60));
        lease.Reconcile(RequestCost.None);
        lease.Dispose();
        _time.Advance(TimeSpan.FromMinutes(1));
        policy.SweepAll();

        policy.Acquire(call, new RequestCost(0, 60)).Dispose();

        Assert.Single(crossings);
        _time.Advance(calendar ? TimeSpan.FromDays(1) : TimeSpan.FromHours(1));
        policy.SweepAll(); // the period is over: the key may go, and the next period reports again
        policy.Acquire(call, new RequestCost(0, 60)).Dispose();
        Assert.Equal(2, crossings.Count);
    }

    [Fact]
    public void Soft_ListenerThrowsOnACrossing_TheRolledBackRequestLeavesTheThresholdToTheNextCrossing()
    {
        var crossings = new List<ThresholdCrossing>();
        bool fail = true;
        using RatePolicy<Call> policy = Builder()
            .AddLayer("alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Money).AsSoft(0.5))
            .OnThresholdCrossed(crossing =>
            {
                if (fail)
                {
                    fail = false;
                    throw new FormatException("listener bug");
                }

                crossings.Add(crossing);
            })
            .Build();
        var call = new Call("alice");

        Assert.Throws<FormatException>(() => policy.Acquire(call, new RequestCost(0, 60)));
        Assert.Equal(0, policy.GetUsage(call, "alerts").Used); // rolled back

        policy.Acquire(call, new RequestCost(0, 60)).Dispose();
        Assert.Single(crossings);
        policy.Acquire(call, new RequestCost(0, 10)).Dispose();
        Assert.Single(crossings);
    }

    [Fact]
    public void Soft_TierWithoutALimitOnTheSoftLayer_AdmitsUntrackedAndTheHardLayersStillCount()
    {
        var crossings = new List<ThresholdCrossing>();
        using RatePolicy<Call> policy = Builder()
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["cost alerts"] = 100, ["cost"] = 50 }, ["pro"] = { ["cost"] = 500 } })
            .AddLayer("cost alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money).AsSoft(0.5))
            .AddLayer("cost", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        var pro = new Call("bob", Tier: "pro");

        using PolicyLease lease = policy.Acquire(pro, new RequestCost(0, 300));
        lease.Reconcile(new RequestCost(0, 400));

        Assert.True(lease.IsAcquired, lease.Reason);
        Assert.Equal(400, policy.GetUsage(pro, "cost").Used);
        Assert.Equal(0, policy.GetUsage(pro, "cost alerts").Used);
        Assert.Empty(crossings);
        Assert.False(policy.Acquire(pro, new RequestCost(0, 101)).IsAcquired); // the hard cap of the pro tier still holds
    }

    [Fact]
    public void Soft_StepChargedAfterTheTiersChanged_IsJudgedAgainstTheCurrentLimit()
    {
        // A stream admitted under a soft limit of 1,000 whose tier drops to 300 mid-stream: its next 100 past the estimate
        // put the day at 200, two thirds of the current limit. Judged against the admission's 1,000 (20 %), the operator's
        // alert at half came only after the day was well past it.
        var crossings = new List<ThresholdCrossing>();
        using RatePolicy<Call> policy = Builder()
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["cost alerts"] = 1_000 } })
            .AddLayer("cost alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money).AsSoft(0.5))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        var call = new Call("alice");
        using PolicyLease stream = policy.Acquire(call, new RequestCost(0, 100));

        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["cost alerts"] = 300 } });
        stream.Charge(new RequestCost(0, 200));

        Assert.Equal(200, policy.GetUsage(call, "cost alerts").Used);
        ThresholdCrossing crossing = Assert.Single(crossings);
        Assert.Equal(300, crossing.Limit);
    }

    [Fact]
    public void Soft_CrossingByARequestALaterLayerRefuses_IsNotReportedAndTheRealCrossingIs()
    {
        // A request that would take the cost alerts past 80 % is refused by the per-user request cap after them and rolled
        // back: that is no crossing, and it must not use up the day's one report of 80 %, which the next real one makes.
        var crossings = new List<ThresholdCrossing>();
        using RatePolicy<Call> policy = Builder()
            .AddLayer("cost alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Money).AsSoft(0.8))
            .AddLayer("req/min", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        var call = new Call("alice");
        Assert.True(policy.Acquire(call, new RequestCost(0, 70)).IsAcquired);

        Assert.False(policy.Acquire(call, new RequestCost(0, 20)).IsAcquired);
        Assert.Empty(crossings);
        Assert.Equal(70, policy.GetUsage(call, "cost alerts").Used);

        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(policy.Acquire(call, new RequestCost(0, 20)).IsAcquired);
        Assert.Equal([new ThresholdCrossing("cost alerts", "alice", 0.8, 90, 100)], crossings);
    }

    [Fact]
    public void GetUsage_ReportsUsedRemainingAndResetWithoutConsuming()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("cost/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Money))
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .Build();
        var call = new Call("alice");
        policy.Acquire(call, new RequestCost(0, 600));

        LayerUsage cost = policy.GetUsage(call, "cost/day");
        IReadOnlyList<LayerUsage> all = policy.GetUsage(call);

        Assert.Equal(new LayerUsage("cost/day", 1_000, 600, TimeSpan.FromHours(14)), cost);
        Assert.Equal(400, cost.Remaining);
        Assert.Equal(0.6, cost.Fraction);
        Assert.Equal(["cost/day", "user"], all.Select(u => u.Layer));
        Assert.Equal(1, all[1].Used);
        Assert.Equal(new LayerUsage("cost/day", 1_000, 0, TimeSpan.Zero), policy.GetUsage(new Call("bob"), "cost/day"));
        Assert.Throws<ArgumentException>(() => policy.GetUsage(call, "nope"));
    }

    [Fact]
    public void UpdateTiers_TakesEffectAtOnceAndKeepsTheUsageCounted()
    {
        using RatePolicy<Call> policy = Builder()
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["cost"] = 100 }, ["pro"] = { ["cost"] = 1_000 } })
            .AddLayer("cost", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Money))
            .Build();
        var free = new Call("alice", Tier: "free");
        Assert.True(policy.Acquire(free, new RequestCost(0, 90)).IsAcquired);
        Assert.False(policy.Acquire(free, new RequestCost(0, 20)).IsAcquired);

        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["cost"] = 200 }, ["pro"] = { ["cost"] = 1_000 } });
        Assert.True(policy.Acquire(free, new RequestCost(0, 20)).IsAcquired);
        Assert.Equal(new LayerUsage("cost", 200, 110, TimeSpan.FromHours(14)), policy.GetUsage(free, "cost"));

        var upgraded = free with { Tier = "pro" };
        Assert.True(policy.Acquire(upgraded, new RequestCost(0, 800)).IsAcquired);
        Assert.Equal(910, policy.GetUsage(upgraded, "cost").Used);
        Assert.Equal("tiers", Assert.Throws<ArgumentException>(() => policy.UpdateTiers(new PolicyTiers { ["free"] = { ["typo"] = 1 } })).ParamName); // as IRatePolicy says
        var tiers = new PolicyTiers();
        ArgumentOutOfRangeException zero = Assert.Throws<ArgumentOutOfRangeException>(() => tiers["free"]["cost"] = 0);
        Assert.Equal("value", zero.ParamName);
        Assert.Contains("'cost'", zero.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UpdateTiers_WhileARequestStallsBetweenLookupAndReservation_TheRequestIsJudgedByTheCapsInForce()
    {
        // The request found its tier (1,000) and stalled before reserving; the cap was lowered to 200 meanwhile. Reserving
        // on the old tier took usage to 600 under a cap of 200.
        using var time = new GatedClock();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["tokens"] = 1_000 } })
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)).Counting(PolicyMeter.Tokens))
            .Build();
        var call = new Call("alice");
        policy.Acquire(call, new RequestCost(100, 0)).Dispose(); // the key exists: the stalled request's first clock read is its reservation's
        Task<PolicyLease> stalled = time.StallAtFirstClockRead(() => policy.Acquire(call, new RequestCost(500, 0)));

        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["tokens"] = 200 } });
        time.Open();

        using PolicyLease lease = await stalled;
        Assert.False(lease.IsAcquired);
        Assert.Equal(100, policy.GetUsage(call, "tokens").Used);
    }

    [Fact]
    public async Task UpdateTiers_RaisesASoftLimitWhileARequestStalls_ThresholdsAreJudgedAgainstTheNewLimit()
    {
        // Judged against the old 1,000, the stalled request reported 80 % at 850 and used up that threshold for the period:
        // at 8,050 of the new 10,000 nothing was reported.
        using var time = new GatedClock();
        var crossings = new List<ThresholdCrossing>();
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>().UseTimeProvider(time)
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["alerts"] = 1_000 } })
            .AddLayer("alerts", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)).Counting(PolicyMeter.Tokens).AsSoft(0.8))
            .OnThresholdCrossed(crossings.Add)
            .Build();
        var call = new Call("alice");
        policy.Acquire(call, new RequestCost(0, 0)).Dispose(); // the key exists: the stalled request's first clock read is its reservation's
        Task<PolicyLease> stalled = time.StallAtFirstClockRead(() => policy.Acquire(call, new RequestCost(850, 0)));

        policy.UpdateTiers(new PolicyTiers { ["free"] = { ["alerts"] = 10_000 } });
        time.Open();
        (await stalled).Dispose();
        policy.Acquire(call, new RequestCost(7_200, 0)).Dispose();

        ThresholdCrossing crossing = Assert.Single(crossings);
        Assert.Equal((0.8, 8_050L, 10_000L), (crossing.Threshold, crossing.Used, crossing.Limit));
    }

    [Fact]
    public void Tiers_ALimitForALayerWhoseRuleSetsItsOwn_Throws()
    {
        // The rule's limit wins, so the tier's would be ignored without a word: an operator raising a cap in configuration
        // would see nothing change.
        var tiers = new PolicyTiers { ["pro"] = { ["burst"] = 50 } };
        RatePolicyBuilder<Call> builder = Builder()
            .UseTiers(c => c.Tier, tiers)
            .AddLayer("burst", c => c.User, PolicyRule.TokenBucket(10, 1, TimeSpan.FromSeconds(1)));
        Assert.Throws<InvalidOperationException>(() => builder.Build());

        using RatePolicy<Call> policy = Builder().AddLayer("burst", c => c.User, PolicyRule.TokenBucket(10, 1, TimeSpan.FromSeconds(1))).Build();
        Assert.Throws<ArgumentException>(() => policy.UpdateTiers(tiers));
    }

    [Fact]
    public void UpdateTiers_OneLimitOutOfItsLayersRange_ThrowsAndEveryLayerKeepsItsOldTiers()
    {
        // The calendar layer takes a limit of 10^9, the fixed window after it cannot take 3 * 10^9 (its counts are ints):
        // the update throws, and the calendar layer must not be left on its new limit while the exception says otherwise.
        using RatePolicy<Call> policy = Builder()
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["tokens/day"] = 100, ["req/min"] = 10 } })
            .AddLayer("tokens/day", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day).Counting(PolicyMeter.Tokens))
            .AddLayer("req/min", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)))
            .Build();
        var call = new Call("alice");

        Assert.Throws<ArgumentOutOfRangeException>(() => policy.UpdateTiers(
            new PolicyTiers { ["free"] = { ["tokens/day"] = 1_000_000_000, ["req/min"] = 3_000_000_000 } }));

        Assert.Equal(100, policy.GetTiers()["free"]["tokens/day"]);
        Assert.Equal(100, policy.GetUsage(call, "tokens/day").Limit);
        Assert.False(policy.Acquire(call, new RequestCost(101, 0)).IsAcquired);
    }

    [Fact]
    public void Acquire_Hierarchy_EveryLevelIsCheckedWhateverMatchedBefore()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .AddLayer("team", c => c.Team, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 3))
            .AddGlobalLayer("org", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 4))
            .Build();

        Assert.True(policy.Acquire(new Call("a", "red")).IsAcquired);
        Assert.True(policy.Acquire(new Call("b", "red")).IsAcquired);
        Assert.True(policy.Acquire(new Call("c", "red")).IsAcquired);
        Assert.Equal("team", policy.Acquire(new Call("d", "red")).BlockingLayer);
        Assert.True(policy.Acquire(new Call("e", "blue")).IsAcquired);
        Assert.Equal("org", policy.Acquire(new Call("f", "blue")).BlockingLayer);
        Assert.Equal(0, policy.GetUsage(new Call("d", "red"), "user").Used);
    }

    [Fact]
    public void AsRateLimiter_GetStatistics_SaysWhatAnAcquireCouldTake()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("requests", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100))
            .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100).Counting(PolicyMeter.Tokens))
            .AddLayer("alerts", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10).Counting(PolicyMeter.Tokens).AsSoft(0.5))
            .Build();
        using PartitionedRateLimiter<Call> limiter = policy.AsRateLimiter(_ => new RequestCost(30, 0));
        var call = new Call("alice");
        Assert.True(limiter.AttemptAcquire(call).IsAcquired);

        // 99 requests left, and 70 tokens: enough for one more estimate of 30, whatever the permit count. The soft layer,
        // past its 10, refuses nothing.
        Assert.Equal(99, limiter.GetStatistics(call)!.CurrentAvailablePermits);
        Assert.True(limiter.AttemptAcquire(call, 99).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics(call)!.CurrentAvailablePermits); // 100 requests used
        Assert.False(limiter.AttemptAcquire(call, 0).IsAcquired);

        var bob = new Call("bob");
        Assert.True(limiter.AttemptAcquire(bob).IsAcquired);
        Assert.True(limiter.AttemptAcquire(bob).IsAcquired);
        Assert.True(limiter.AttemptAcquire(bob).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics(bob)!.CurrentAvailablePermits); // 97 requests left, but 10 tokens: less than 30
        Assert.False(limiter.AttemptAcquire(bob).IsAcquired);

        var carol = new Call("carol");
        policy.Pause("maintenance");
        Assert.Equal(0, limiter.GetStatistics(carol)!.CurrentAvailablePermits);
        policy.Resume();
        Assert.Equal(100, limiter.GetStatistics(carol)!.CurrentAvailablePermits);
    }

    [Fact]
    public void AsRateLimiter_ChainsWithInBoxLimitersAndReturnsPolicyLeases()
    {
        using RatePolicy<Call> policy = Builder().AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 2)).Build();
        using PartitionedRateLimiter<Call> limiter = policy.AsRateLimiter();
        using PartitionedRateLimiter<Call> chained = PartitionedRateLimiter.CreateChained(
            limiter,
            PartitionedRateLimiter.Create<Call, string>(c => RateLimitPartition.GetNoLimiter(c.User)));
        var call = new Call("alice");

        Assert.True(limiter.AttemptAcquire(call, 0).IsAcquired); // a probe reserves nothing
        Assert.True(chained.AttemptAcquire(call).IsAcquired);
        Assert.IsAssignableFrom<PolicyLease>(limiter.AttemptAcquire(call));
        RateLimitLease refused = chained.AttemptAcquire(call);

        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.ReasonPhrase, out string? _));
        Assert.False(limiter.AttemptAcquire(call, 0).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics(call)!.CurrentAvailablePermits);
    }

    [Fact]
    public void Sweep_IdleKeysEvicted_TheyComeBackFresh()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .WithIdleEvictionInterval(TimeSpan.FromSeconds(1))
            .Build();
        var call = new Call("alice");
        Assert.True(policy.Acquire(call).IsAcquired);
        Assert.False(policy.Acquire(call).IsAcquired);

        _time.Advance(TimeSpan.FromMinutes(2));

        Assert.True(policy.Acquire(call).IsAcquired);
        Assert.False(policy.Acquire(call).IsAcquired);
    }

    [Fact]
    public void Build_LayersGivenOneSelectorInstance_ShareOneKeyTable()
    {
        Func<Call, string> byUser = c => c.User;
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", byUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddLayer("tokens", byUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
            .AddLayer("cost", byUser, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Money))
            .AddLayer("same selector, own comparer", byUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5), comparer: StringComparer.OrdinalIgnoreCase)
            .AddLayer("team", c => c.Team, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddGlobalLayer("global", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100))
            .Build();

        Assert.Equal(3, policy.KeyTableCount);
        using PolicyLease lease = policy.Acquire(new Call("alice"), new RequestCost(300, 200));
        Assert.True(lease.IsAcquired);
        Assert.Equal([1, 300, 200, 1, 1, 1], policy.GetUsage(new Call("alice")).Select(usage => usage.Used));
        Assert.Equal([0, 0, 0, 0, 1, 1], policy.GetUsage(new Call("bob")).Select(usage => usage.Used));
    }

    [Fact]
    public void Sweep_SharedKeyWithOneLayerStillCounting_KeepsTheKey()
    {
        // The minute layer is idle after two minutes; the day's cost is not: the user's shared entry must stay.
        Func<Call, string> byUser = c => c.User;
        using RatePolicy<Call> policy = Builder()
            .AddLayer("user", byUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
            .AddLayer("cost", byUser, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Money))
            .Build();
        var call = new Call("alice");
        policy.Acquire(call, new RequestCost(0, 700)).Dispose();

        _time.Advance(TimeSpan.FromMinutes(2));
        policy.SweepAll();

        Assert.Equal(700, policy.GetUsage(call, "cost").Used);
        Assert.Equal("cost", policy.Acquire(call, new RequestCost(0, 400)).BlockingLayer);
        Assert.True(policy.Acquire(call, new RequestCost(0, 300)).IsAcquired);
    }

    [Fact]
    public void Acquire_ThresholdListenerThrows_EveryReservationIsRolledBack()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("streams", c => c.User, PolicyRule.Concurrency(1))
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .AddLayer("cost alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Money).AsSoft(0.5))
            .OnThresholdCrossed(_ => throw new FormatException("listener bug"))
            .Build();
        var call = new Call("alice");

        Assert.Throws<FormatException>(() => policy.Acquire(call, new RequestCost(0, 60)));

        Assert.All(policy.GetUsage(call), usage => Assert.Equal(0, usage.Used));
        Assert.True(policy.Acquire(call, new RequestCost(0, 10)).IsAcquired); // the stream slot was given back too
    }

    [Fact]
    public void Acquire_ListenerThrowsAndTheClockFailsDuringTheRollBack_EveryOtherReservationAndTheSlotComeBack()
    {
        // A calendar budget's refund reads the clock: when that read throws, the rollback went no further, so the window's
        // permit stayed counted and the stream slot was held by no lease, for good.
        var time = new FailingClock();
        bool thrown = false;
        using RatePolicy<Call> policy = new RatePolicyBuilder<Call>()
            .UseTimeProvider(time)
            .AddLayer("streams", c => c.User, PolicyRule.Concurrency(1))
            .AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10))
            .AddLayer("cost alerts", c => c.User, PolicyRule.Calendar(CalendarPeriod.Day, 100).Counting(PolicyMeter.Money).AsSoft(0.5))
            .OnThresholdCrossed(_ =>
            {
                if (!thrown)
                {
                    thrown = true;
                    time.Failing = true;
                    throw new FormatException("listener bug");
                }
            })
            .Build();
        var call = new Call("alice");

        Assert.Throws<FormatException>(() => policy.Acquire(call, new RequestCost(0, 60))); // the listener's, not the clock's
        time.Failing = false;

        LayerUsage[] usage = [.. policy.GetUsage(call)];
        Assert.Equal(0, usage.Single(u => u.Layer == "streams").Used);
        Assert.Equal(0, usage.Single(u => u.Layer == "user").Used);
        Assert.Equal(60, usage.Single(u => u.Layer == "cost alerts").Used); // the refund that failed keeps its charge: stricter
        Assert.True(policy.Acquire(call, new RequestCost(0, 10)).IsAcquired); // the slot came back
    }

    [Fact]
    public void Build_InvalidSetup_ThrowsClearly()
    {
        PolicyRule rule = PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1);
        Assert.Throws<ArgumentException>(() => Builder().AddLayer("a", c => c.User, rule).AddLayer("a", c => c.User, rule));
        Assert.Throws<ArgumentException>(() => Builder().AddLayer("pause", c => c.User, rule)); // the operator's pause's name in refusals
        Assert.Throws<InvalidOperationException>(() => Builder().Build());
        Assert.Throws<InvalidOperationException>(() => Builder().AddLayer("a", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1))).Build());
        Assert.Throws<InvalidOperationException>(() => Builder()
            .UseTiers(c => c.Tier, new PolicyTiers { ["free"] = { ["b"] = 1 } })
            .AddLayer("a", c => c.User, rule).Build());
        RatePolicyBuilder<Call> full = Builder();
        for (int i = 0; i < 16; i++)
        {
            full.AddLayer($"layer {i}", c => c.User, rule);
        }

        Assert.Throws<ArgumentException>(() => full.AddLayer("one more", c => c.User, rule));
        Assert.Throws<ArgumentOutOfRangeException>(() => PolicyRule.SlidingWindowCounter(TimeSpan.FromSeconds(10), 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => PolicyRule.SlidingWindowCounter(TimeSpan.FromTicks(1 << 20), 1 << 20)); // a slot per segment per key
        Assert.Throws<ArgumentOutOfRangeException>(() => PolicyRule.FixedWindow(TimeSpan.Zero, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 0));
        Assert.Throws<ArgumentException>(() => PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), 10).Counting(PolicyMeter.Tokens));
        Assert.Throws<ArgumentException>(() => PolicyRule.TokenBucket(10, 1, TimeSpan.FromSeconds(1)).AsSoft(0.5));
        Assert.Throws<ArgumentException>(() => PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1).AsSoft(0.8, 0.5));
        Assert.Contains("Not/A_Zone", Assert.Throws<TimeZoneNotFoundException>(() => PolicyRule.CalendarInZone(CalendarPeriod.Day, "Not/A_Zone", 1)).Message, StringComparison.Ordinal);
        Assert.Equal(TimeZoneInfo.Utc, PolicyRule.CalendarInZone(CalendarPeriod.Day, "UTC", 1).TimeZone);
    }

    [Fact]
    public void Acquire_AllFourAlgorithmsAsLayers_EachEnforcesItsLimit()
    {
        using RatePolicy<Call> policy = Builder()
            .AddLayer("log", c => c.User, PolicyRule.SlidingWindowLog(TimeSpan.FromMinutes(1), 5))
            .AddLayer("counter", c => c.User, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 4))
            .AddLayer("fixed", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 6))
            .AddLayer("bucket", c => c.User, PolicyRule.TokenBucket(3, 1, TimeSpan.FromSeconds(10)))
            .Build();
        var call = new Call("alice");

        Assert.True(policy.Acquire(call).IsAcquired);
        Assert.True(policy.Acquire(call).IsAcquired);
        Assert.True(policy.Acquire(call).IsAcquired);
        PolicyLease refused = policy.Acquire(call);

        Assert.Equal("bucket", refused.BlockingLayer);
        Assert.Equal(3, policy.GetUsage(call, "log").Used);
        Assert.Equal(3, policy.GetUsage(call, "counter").Used);
        Assert.Equal(3, policy.GetUsage(call, "fixed").Used);
        _time.Advance(TimeSpan.FromSeconds(10));
        Assert.True(policy.Acquire(call).IsAcquired);
        Assert.Equal("counter", policy.Acquire(call).BlockingLayer);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void AcquireAndDrop(RatePolicy<Call> policy, Call call) => Assert.True(policy.Acquire(call).IsAcquired);

    private RatePolicy<Call> TokenPolicy() => Builder()
        .AddLayer("tokens", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000).Counting(PolicyMeter.Tokens))
        .Build();
}
