using System.Threading.RateLimiting;
using FsCheck;
using FsCheck.Fluent;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Partitioning;
using RateEngine.Tests.Properties;
using RateEngine.Tests.Support;
using Xunit.Sdk;

namespace RateEngine.Tests.Partitioning;

/// <summary>A step against one key of a partitioned limiter, or a whole-limiter step (time, sweeps).</summary>
public sealed record KeyOp(int Key, Op Op)
{
    public override string ToString() => $"{Op}@{Key}";
}

/// <summary>An idle-eviction sweep over every shard.</summary>
public sealed record Sweep : Op;

/// <param name="HotKeys">
/// The number of per-core blocks for hot keys (0: none). Every admission is sampled, and the stripe each request starts
/// from (and the processor it counts as) comes from <see cref="HomeStripes"/> in turn, as if the requests came from that
/// many cores: a key is promoted once two of its admissions in a row come from different ones.
/// </param>
public sealed record PartitionScenario(LimiterSpec Spec, int MaxPartitions, KeyOp[] Ops, int HotKeys = 0, int[]? HomeStripes = null)
{
    public override string ToString() =>
        $"{Spec} max {MaxPartitions}{(HotKeys > 0 ? $" hot keys, {HotKeys} stripes, homes [{string.Join(",", HomeStripes ?? [])}]" : "")} ops: [{string.Join(", ", Ops.Select(o => o.ToString()))}]";

    /// <summary>The per-core options of a hot-key scenario: any key may be promoted, by two admissions from different homes.</summary>
    public PerCoreReservationOptions? PerCore()
    {
        if (HotKeys == 0)
        {
            return null;
        }

        int next = 0;
        int[] homes = HomeStripes is { Length: > 0 } given ? given : [0];
        return new PerCoreReservationOptions
        {
            Stripes = HotKeys,
            HotKeyLimitFloor = 1,
            HotKeySampling = 1,
            HotKeyStreak = 1,
            ChooseStripe = () => homes[next++ % homes.Length],
        };
    }
}

public static class PartitionGenerators
{
    /// <summary>Acquires, waits and cancellations on a few keys, interleaved with time and eviction sweeps.</summary>
    public static Arbitrary<PartitionScenario> Everything(LimiterKind kind) =>
        (from spec in Generators.Spec(kind, queueing: true)
         from maxPartitions in Gen.Elements(1, 3, 64, 1 << 20)
         from ops in Gen.ArrayOf(
             from key in Gen.Choose(0, 4)
             from op in Gen.Frequency(
                 (8, Gen.Choose(0, spec.Limit).Select(n => (Op)new Acquire(n))),
                 (4, Gen.Choose(1, (int)spec.WindowTicks * 2).Select(t => (Op)new Advance(t))),
                 (1, Gen.Elements(1, 5, 20).Select(k => (Op)new Advance(k * spec.FullRefillTicks))),
                 (3, Gen.Constant((Op)new Sweep())),
                 (2, Gen.Choose(0, spec.Limit).Select(n => (Op)new Wait(n))),
                 (1, Gen.Choose(0, 50).Select(i => (Op)new Cancel(i))))
             select new KeyOp(key, op))
         select new PartitionScenario(spec, maxPartitions, ops)).ToArbitrary();

    /// <summary><see cref="Everything"/> with per-core blocks for hot keys, 2 or 4 of them, visited in a random order.</summary>
    public static Arbitrary<PartitionScenario> HotKeys(LimiterKind kind) =>
        (from scenario in Everything(kind).Generator
         from stripes in Gen.Elements(2, 4)
         from first in Gen.Choose(0, stripes - 1)
         from second in Gen.Choose(1, stripes - 1).Select(offset => (first + offset) % stripes)
         from rest in Gen.ArrayOf(Gen.Choose(0, stripes - 1))
         select scenario with { HotKeys = stripes, HomeStripes = [first, second, .. rest] }).ToArbitrary();

    /// <summary>Acquires on a few keys, forward time and sweeps only: each key must decide like its reference model.</summary>
    public static Arbitrary<PartitionScenario> Decisions(LimiterKind kind) =>
        (from spec in Generators.Spec(kind, queueing: false)
         from ops in Gen.ArrayOf(
             from key in Gen.Choose(0, 4)
             from op in Gen.Frequency(
                 (6, Gen.Choose(0, spec.Limit).Select(n => (Op)new Acquire(n))),
                 (4, Gen.Choose(1, (int)spec.WindowTicks * 2).Select(t => (Op)new Advance(t))),
                 (1, Gen.Elements(1, 5).Select(k => (Op)new Advance(k * spec.FullRefillTicks))),
                 (3, Gen.Constant((Op)new Sweep())))
             select new KeyOp(key, op))
         select new PartitionScenario(spec, 1 << 20, ops)).ToArbitrary();
}

public static class PartitionedScenarioRunner
{
    /// <summary>
    /// Every key keeps its own guarantee across evictions and re-creations, waits, cancellations and a full table;
    /// statistics count every lease; disposal completes every wait.
    /// </summary>
    public static void EveryKeyKeepsItsGuarantee(PartitionScenario scenario)
    {
        var time = new FakeTimeProvider();
        PartitionedRateLimiter<int> limiter = scenario.Spec.CreatePartitioned(time, scenario.MaxPartitions, scenario.PerCore());
        var diagnostics = (IPartitionDiagnostics)limiter;
        var admissions = new Dictionary<int, List<Admitted>>();
        long now = 0; // the limiter's clock: ticks since it was made
        bool attempting = false; // in AttemptAcquire (a wait is served while time advances, at a time between steps)
        diagnostics.AdmissionObserver = (key, a) =>
        {
            // One thread on a clock that only moves forward: a decision is stamped at now (a bucket's, at now's unit), so a
            // block that handed out permits of a period that is over, under that period's stamp, shows here.
            long unit = scenario.Spec.Kind == LimiterKind.Bucket ? Math.Max(1, scenario.Spec.WindowTicks / scenario.Spec.TokensPerPeriod) : 1;
            if (scenario.HotKeys > 0 && attempting && (a.Stamp > now || now - a.Stamp >= unit))
            {
                throw new XunitException($"key {key}: an admission stamped {a.Stamp} at {now}");
            }

            if (!admissions.TryGetValue((int)key, out List<Admitted>? list))
            {
                admissions[(int)key] = list = [];
            }

            // Checked at the limiter's clock when the permit was handed out, not at the stamp the limiter chose for it.
            list.Add(new Admitted(diagnostics.Now(), a.Permits));
        };

        long successfulLeases = 0;
        var granted = new Dictionary<int, long>(); // permits per key as the leases say: the record must hold all of them
        void Granted(int key, int permits) => granted[key] = granted.GetValueOrDefault(key) + permits;
        var waits = new List<(Task<RateLimitLease> Task, CancellationTokenSource Source, int Key, int Permits)>();
        foreach (KeyOp step in scenario.Ops)
        {
            switch (step.Op)
            {
                case Acquire(int permits):
                    attempting = true;
                    using (RateLimitLease lease = limiter.AttemptAcquire(step.Key, permits))
                    {
                        successfulLeases += lease.IsAcquired ? 1 : 0;
                        Granted(step.Key, lease.IsAcquired ? permits : 0);
                    }

                    attempting = false;
                    break;
                case Advance(long ticks):
                    time.Advance(TimeSpan.FromTicks(ticks));
                    now += ticks;
                    break;
                case Sweep:
                    diagnostics.SweepAllShards();
                    break;
                case Wait(int permits):
                    var source = new CancellationTokenSource();
                    waits.Add((limiter.AcquireAsync(step.Key, permits, source.Token).AsTask(), source, step.Key, permits));
                    break;
                case Cancel(int index) when waits.Count > 0:
                    waits[index % waits.Count].Source.Cancel();
                    break;
            }

            Assert.InRange(diagnostics.PartitionCount, 0, scenario.MaxPartitions); // the table's bound is exact
        }

        successfulLeases += waits.Count(w => w.Task.IsCompletedSuccessfully && w.Task.Result.IsAcquired);
        foreach (var wait in waits.Where(w => w.Task.IsCompletedSuccessfully && w.Task.Result.IsAcquired))
        {
            Granted(wait.Key, wait.Permits);
        }

        Assert.Equal(successfulLeases, limiter.GetStatistics(0)!.TotalSuccessfulLeases);
        foreach (var (key, permits) in granted.Where(pair => pair.Value > 0))
        {
            Assert.True(admissions.TryGetValue(key, out List<Admitted>? recorded), $"key {key}: {permits} permits granted, none recorded");
            Assert.Equal(permits, recorded.Sum(a => a.Permits)); // so the check below sees every permit handed out
        }

        limiter.Dispose();
        Assert.All(waits, w => Assert.True(w.Task.IsCompleted, "a wait was left pending after Dispose"));
        foreach (var wait in waits)
        {
            wait.Source.Dispose();
        }

        foreach (var (key, list) in admissions)
        {
            string? violation = Guarantee.FindViolation(scenario.Spec, list);
            if (violation is not null)
            {
                throw new XunitException($"key {key}: {violation}");
            }
        }
    }

    /// <summary>Sweeps never change a decision: each key decides exactly like its own reference model.</summary>
    public static void EveryKeyDecidesLikeItsModel(PartitionScenario scenario)
    {
        var time = new FakeTimeProvider();
        using PartitionedRateLimiter<int> limiter = scenario.Spec.CreatePartitioned(time, scenario.MaxPartitions);
        var diagnostics = (IPartitionDiagnostics)limiter;
        var models = new Dictionary<int, ReferenceModel>();
        long now = 0;
        foreach (KeyOp step in scenario.Ops)
        {
            switch (step.Op)
            {
                case Advance(long ticks):
                    time.Advance(TimeSpan.FromTicks(ticks));
                    now += ticks;
                    break;
                case Sweep:
                    diagnostics.SweepAllShards();
                    break;
                case Acquire(int permits):
                    ReferenceModel model = models.TryGetValue(step.Key, out ReferenceModel? m) ? m : models[step.Key] = new ReferenceModel(scenario.Spec);
                    long available = limiter.GetStatistics(step.Key)!.CurrentAvailablePermits;
                    using (RateLimitLease lease = limiter.AttemptAcquire(step.Key, permits))
                    {
                        model.Check(now, permits, available, lease, $"key {step.Key}");
                    }

                    break;
            }
        }
    }
}
