using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Policies;

public abstract record PolicyOp;

public sealed record AcquireOp(int User, long Tokens, long Money) : PolicyOp;

public sealed record ReconcileOp(int Lease, long Tokens, long Money) : PolicyOp;

public sealed record ChargeOp(int Lease, long Tokens, long Money) : PolicyOp;

public sealed record DisposeOp(int Lease) : PolicyOp;

public sealed record AdvanceOp(long Ticks) : PolicyOp;

public sealed record TierOp(long Tokens) : PolicyOp;

/// <summary>
/// A layered policy against its exact reference model (<see cref="PolicyModel"/>) over random sequences of acquires,
/// step charges, reconciles, disposes, tier changes and time, on a fake clock. Checked after every step:
/// <list type="number">
/// <item>a refused acquire leaves every layer's usage unchanged;</item>
/// <item>an acquire is admitted exactly when every layer has room for it under the limit in force (so reservations never
/// exceed a budget, and a tier change applies at the next decision), and usage equals the model's ledger: reservations,
/// minus refunds in the period they were made in, plus overrun charges, which alone go past a cap, by their amount;</item>
/// <item>refunds never take usage below zero or free anything twice (the model throws if its ledger would go negative, and
/// a second reconcile or a reconcile after dispose must throw);</item>
/// <item>calendar days reset at midnight UTC and minute windows at their boundaries.</item>
/// </list>
/// </summary>
public class RatePolicyPropertyTests
{
    private static readonly DateTimeOffset Start = new(2026, 12, 2, 21, 17, 3, TimeSpan.Zero);
    private static readonly string[] Users = ["ann", "bob", "cy"];

    [Property(MaxTest = 300)]
    public Property RandomOperations_MatchTheExactModel() => Prop.ForAll(Scenarios(), ops =>
    {
        if (Run(ops, sharedKeys: false) is { } failure)
        {
            throw new InvalidOperationException(failure);
        }
    });

    /// <summary>The same, with the keyed layers sharing one key table: a key is evicted only when all four are idle.</summary>
    [Property(MaxTest = 300)]
    public Property RandomOperations_SharedKeyTable_MatchTheExactModel() => Prop.ForAll(Scenarios(), ops =>
    {
        if (Run(ops, sharedKeys: true) is { } failure)
        {
            throw new InvalidOperationException(failure);
        }
    });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Run_Regressions_MatchTheModel(bool sharedKeys)
    {
        // Cross midnight with a reservation open, then reconcile it: the refund must not land in the new day.
        PolicyOp[] ops = [new AcquireOp(0, 100, 900), new AdvanceOp(TimeSpan.FromHours(3).Ticks), new ReconcileOp(0, 10, 10), new AcquireOp(0, 100, 1_500)];
        Assert.Null(Run(ops, sharedKeys));

        // The window ends and the sweep evicts the idle key while its lease is open: the overrun must still count.
        Assert.Null(Run([new AcquireOp(0, 535, 302), new AdvanceOp(750_000_000), new ReconcileOp(0, 1_174, 843)], sharedKeys));
    }

    private static Arbitrary<PolicyOp[]> Scenarios() =>
        Gen.ArrayOf(Gen.Frequency(
            (8, from user in Gen.Choose(0, 2)
                from tokens in Gen.Frequency((1, Gen.Constant(0)), (6, Gen.Choose(1, 900)), (1, Gen.Choose(2_000, 3_500)))
                from money in Gen.Choose(0, 700)
                select (PolicyOp)new AcquireOp(user, tokens, money)),
            (4, from lease in Gen.Choose(0, 30)
                from tokens in Gen.Choose(0, 1_200)
                from money in Gen.Choose(0, 900)
                select (PolicyOp)new ReconcileOp(lease, tokens, money)),
            (3, from lease in Gen.Choose(0, 30)
                from tokens in Gen.Choose(0, 400)
                from money in Gen.Choose(0, 300)
                select (PolicyOp)new ChargeOp(lease, tokens, money)),
            (3, Gen.Choose(0, 30).Select(lease => (PolicyOp)new DisposeOp(lease))),
            (4, Gen.Frequency(
                (6, Gen.Choose(0, 20_000).Select(ms => ms * TimeSpan.TicksPerMillisecond)),
                (2, Gen.Choose(50, 130).Select(s => s * TimeSpan.TicksPerSecond)),
                (1, Gen.Choose(1, 14).Select(h => h * TimeSpan.TicksPerHour))).Select(ticks => (PolicyOp)new AdvanceOp(ticks))),
            (1, Gen.Choose(300, 3_000).Select(tokens => (PolicyOp)new TierOp(tokens)))))
        .Select(ops => ops.Take(80).ToArray())
        .ToArbitrary();

    /// <summary>Runs the operations on a policy and its model; returns the first disagreement, or null.</summary>
    internal static string? Run(PolicyOp[] ops, bool sharedKeys)
    {
        var time = new FakeTimeProvider(Start);
        var model = new PolicyModel(time.GetUtcNow());
        using RatePolicy<string> policy = PolicyModel.CreatePolicy(time, model.TierTokenLimit, sharedKeys);
        if (policy.KeyTableCount != (sharedKeys ? 1 : 4))
        {
            return $"{policy.KeyTableCount} key tables";
        }

        var leases = new List<ModelLease>();
        for (int step = 0; step < ops.Length; step++)
        {
            string? failure = Apply(ops[step], policy, model, time, leases) ?? Compare(policy, model, time);
            if (failure is not null)
            {
                return $"step {step} ({ops[step]}): {failure}\nops: {string.Join(", ", ops.Take(step + 1))}";
            }
        }

        return null;
    }

    private static string? Apply(PolicyOp op, RatePolicy<string> policy, PolicyModel model, FakeTimeProvider time, List<ModelLease> leases)
    {
        DateTimeOffset now = time.GetUtcNow();
        switch (op)
        {
            case AcquireOp(int u, long tokens, long money):
                return AcquireStep(policy, model, now, leases, Users[u], new RequestCost(tokens, money));

            case ReconcileOp(int index, long tokens, long money) when leases.Count > 0:
            {
                ModelLease lease = leases[index % leases.Count];
                var actual = new RequestCost(tokens, money);
                if (lease.Settled || lease.Disposed)
                {
                    return Throws<InvalidOperationException>(() => lease.Lease.Reconcile(actual), "a settled lease reconciled again");
                }

                for (int i = 0; i < PolicyModel.Layers.Length; i++)
                {
                    ModelLayer layer = PolicyModel.Layers[i];
                    if (layer.Meter == PolicyMeter.Requests)
                    {
                        continue;
                    }

                    long target = actual.On(layer.Meter);
                    long counted = lease.Reserved[i] + lease.Overrun[i];
                    if (target > counted)
                    {
                        model.Add(layer, lease.User, now, target - counted);
                        lease.Overrun[i] += target - counted;
                    }
                    else if (target < counted)
                    {
                        long refund = Math.Min(counted - target, lease.Reserved[i]);
                        lease.Reserved[i] -= refund;
                        model.Add(layer, lease.User, now, -refund, lease.Periods[i]);
                    }
                }

                RequestCost overrun = lease.Lease.Reconcile(actual);
                lease.Settled = true;
                var expected = new RequestCost(Math.Max(0, tokens - lease.Estimate.Tokens), Math.Max(0, money - lease.Estimate.Money));
                return overrun == expected ? null : $"reported overrun {overrun}, expected {expected}";
            }

            case ChargeOp(int index, long tokens, long money) when leases.Count > 0:
            {
                ModelLease lease = leases[index % leases.Count];
                var step = new RequestCost(tokens, money);
                if (lease.Settled || lease.Disposed)
                {
                    return Throws<InvalidOperationException>(() => lease.Lease.Charge(step), "a settled lease took a step");
                }

                lease.Consumed = new RequestCost(lease.Consumed.Tokens + tokens, lease.Consumed.Money + money);
                for (int i = 0; i < PolicyModel.Layers.Length; i++)
                {
                    ModelLayer layer = PolicyModel.Layers[i];
                    long excess = layer.Meter == PolicyMeter.Requests ? 0 : lease.Consumed.On(layer.Meter) - lease.Estimate.On(layer.Meter) - lease.Overrun[i];
                    if (excess > 0)
                    {
                        model.Add(layer, lease.User, now, excess);
                        lease.Overrun[i] += excess;
                    }
                }

                lease.Lease.Charge(step);
                return null;
            }

            case DisposeOp(int index) when leases.Count > 0:
            {
                ModelLease lease = leases[index % leases.Count];
                if (!lease.Disposed)
                {
                    model.Add(PolicyModel.Layers[3], lease.User, now, -1);
                    lease.Disposed = true;
                }

                lease.Lease.Dispose();
                return null;
            }

            case AdvanceOp(long ticks):
                time.Advance(TimeSpan.FromTicks(ticks));
                return null;

            case TierOp(long tokens):
                model.TierTokenLimit = tokens;
                policy.UpdateTiers(new PolicyTiers { ["t"] = { ["tokens/min"] = tokens } });
                return null;

            default:
                return null;
        }
    }

    private static string? AcquireStep(RatePolicy<string> policy, PolicyModel model, DateTimeOffset now, List<ModelLease> leases, string user, RequestCost cost)
    {
        bool admit = true;
        foreach (ModelLayer layer in PolicyModel.Layers)
        {
            long amount = layer.Meter == PolicyMeter.Requests ? 1 : cost.On(layer.Meter);
            long used = model.Used(layer, user, now);
            long limit = model.LimitOf(layer);
            admit &= amount <= limit && (amount == 0 ? used < limit : used + amount <= limit);
        }

        IReadOnlyList<LayerUsage> before = policy.GetUsage(user);
        PolicyLease lease = policy.Acquire(user, cost);
        if (lease.IsAcquired != admit)
        {
            return $"{(lease.IsAcquired ? "admitted" : "refused")} {user} {cost}, the model {(admit ? "admits" : "refuses")} ({lease.BlockingLayer}: {lease.Reason})";
        }

        if (!admit)
        {
            IReadOnlyList<LayerUsage> after = policy.GetUsage(user);
            return before.SequenceEqual(after) ? null : $"a refused acquire changed usage: {string.Join(", ", before)} -> {string.Join(", ", after)}";
        }

        var held = new ModelLease(lease, user, cost, [.. PolicyModel.Layers.Select(layer => model.PeriodOf(layer, now))]);
        for (int i = 0; i < PolicyModel.Layers.Length; i++)
        {
            ModelLayer layer = PolicyModel.Layers[i];
            long amount = layer.Meter == PolicyMeter.Requests ? 1 : cost.On(layer.Meter);
            model.Add(layer, user, now, amount);
            held.Reserved[i] = amount;
        }

        leases.Add(held);
        return null;
    }

    private static string? Compare(RatePolicy<string> policy, PolicyModel model, FakeTimeProvider time)
    {
        DateTimeOffset now = time.GetUtcNow();
        foreach (string user in Users)
        {
            foreach (ModelLayer layer in PolicyModel.Layers)
            {
                LayerUsage usage = policy.GetUsage(user, layer.Name);
                long expected = model.Used(layer, user, now);
                if (usage.Used != expected || usage.Used < 0)
                {
                    return $"{layer.Name} of {user}: used {usage.Used}, the model says {expected}";
                }

                if (usage.Limit != model.LimitOf(layer))
                {
                    return $"{layer.Name} of {user}: limit {usage.Limit}, the model says {model.LimitOf(layer)}";
                }
            }
        }

        return null;
    }

    private static string? Throws<TException>(Action action, string what)
        where TException : Exception
    {
        try
        {
            action();
            return $"{what}: no exception";
        }
        catch (TException)
        {
            return null;
        }
    }
}

