using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Policies;

/// <summary>
/// Several threads on one policy, one key, at once; the outcome is checked afterwards against what each thread recorded.
/// The clock stands still within a run (a fake one), so every decision falls in one window and the ledger is exact.
/// </summary>
public class RatePolicyStressTests
{
    private const int Threads = 4;
    private const int RequestsPerThread = 20_000;

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 2, 12, 0, 0, TimeSpan.Zero));

    [Fact]
    public void ReserveAndReconcile_FourThreads_UsageIsChargesMinusRefundsAndNeverAboveTheCap()
    {
        using RatePolicy<string> policy = new RatePolicyBuilder<string>()
            .UseTimeProvider(_time)
            .AddLayer("requests", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), int.MaxValue))
            .AddLayer("tokens", user => user, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 50_000).Counting(PolicyMeter.Tokens))
            .AddLayer("cost", user => user, PolicyRule.Calendar(CalendarPeriod.Day, 400_000).Counting(PolicyMeter.Money))
            .Build();
        long[] tokens = new long[Threads];
        long[] money = new long[Threads];
        long[] admitted = new long[Threads];
        long overTheCap = 0;

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, thread =>
        {
            var random = new Random(thread);
            for (int i = 0; i < RequestsPerThread; i++)
            {
                var estimate = new RequestCost(random.Next(1, 400), random.Next(1, 300));
                PolicyLease lease = policy.Acquire("alice", estimate);
                if (!lease.IsAcquired)
                {
                    continue;
                }

                // While other threads reserve and refund: no step charges past an estimate here, so no moment may show
                // more than the caps (the totals checked at the end could hide a passing excess that a refund took back).
                if (policy.GetUsage("alice", "tokens").Used > 50_000 || policy.GetUsage("alice", "cost").Used > 400_000)
                {
                    Interlocked.Increment(ref overTheCap);
                }

                admitted[thread]++;
                switch (random.Next(3))
                {
                    case 0: // settled at less than the estimate: the rest comes back
                        var actual = new RequestCost(random.Next(0, (int)estimate.Tokens + 1), random.Next(0, (int)estimate.Money + 1));
                        lease.Reconcile(actual);
                        tokens[thread] += actual.Tokens;
                        money[thread] += actual.Money;
                        break;
                    case 1: // steps, then a settle at what they consumed
                        lease.Charge(new RequestCost(estimate.Tokens / 2, estimate.Money / 3));
                        lease.Reconcile();
                        tokens[thread] += estimate.Tokens / 2;
                        money[thread] += estimate.Money / 3;
                        break;
                    default: // disposed unreconciled: the estimate is kept
                        tokens[thread] += estimate.Tokens;
                        money[thread] += estimate.Money;
                        break;
                }

                lease.Dispose();
            }
        });

        Assert.Equal(0, Interlocked.Read(ref overTheCap));
        Assert.Equal(admitted.Sum(), policy.GetUsage("alice", "requests").Used);
        Assert.Equal(tokens.Sum(), policy.GetUsage("alice", "tokens").Used);
        Assert.Equal(money.Sum(), policy.GetUsage("alice", "cost").Used);
        Assert.InRange(policy.GetUsage("alice", "tokens").Used, 1, 50_000);
        Assert.InRange(policy.GetUsage("alice", "cost").Used, 1, 400_000);
    }

    [Fact]
    public void SharedKeyTable_FourThreadsWhileSweeping_EvictionNeverDropsCountedUsage()
    {
        // Three layers share one key table. Every key was used in an earlier window, so its entry is idle when the run
        // starts: the sweeper may evict it under the threads' feet, but never once a layer has counted on it, or the
        // caps below would be passed.
        const int Keys = 4;
        const int Cap = 40;
        Func<string, string> byUser = user => user;
        using RatePolicy<string> policy = new RatePolicyBuilder<string>()
            .UseTimeProvider(_time)
            .AddLayer("requests", byUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), Cap))
            .AddLayer("tokens", byUser, PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, 100 * Cap).Counting(PolicyMeter.Tokens))
            .AddLayer("cost", byUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10 * Cap).Counting(PolicyMeter.Money))
            .Build();
        string[] keys = [.. Enumerable.Range(0, Keys).Select(k => $"user-{k}")];
        Assert.Equal(1, policy.KeyTableCount);
        for (int round = 0; round < 1_500; round++)
        {
            foreach (string key in keys)
            {
                policy.Acquire(key, new RequestCost(1, 1)).Dispose();
            }

            _time.Advance(TimeSpan.FromMinutes(2)); // every entry idle, and nothing counted in the new window
            long[,] admitted = new long[Threads, Keys];
            WhileSweeping(policy, () => Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, thread =>
            {
                for (int i = 0; i < 2 * Cap; i++)
                {
                    int key = (i + thread) % Keys;
                    using PolicyLease lease = policy.Acquire(keys[key], new RequestCost(100, 10));
                    if (lease.IsAcquired)
                    {
                        admitted[thread, key]++;
                    }
                }
            }));

            for (int key = 0; key < Keys; key++)
            {
                long total = Enumerable.Range(0, Threads).Sum(thread => admitted[thread, key]);
                Assert.Equal(Cap, total); // 2 * Cap attempts per key: exactly the cap admitted, not one more
                Assert.Equal(Cap, policy.GetUsage(keys[key], "requests").Used);
                Assert.Equal(100 * Cap, policy.GetUsage(keys[key], "tokens").Used);
                Assert.Equal(10 * Cap, policy.GetUsage(keys[key], "cost").Used);
            }
        }
    }

    [Fact]
    public void NestedLayer_FourThreadsWhileDroppingIdleSubKeys_NoAdmissionIsLost()
    {
        // Three tools per user, room for two: every round starts with both held tools idle, so a call for the third
        // drops them while other threads admit on them. A drop must never take a cell that has counted, or a pair's
        // usage would fall below what the threads saw admitted (and the cap could be passed).
        const int Cap = 30;
        string[] users = ["ann", "bob"];
        string[] tools = ["search", "chat", "sql"];
        Func<(string User, string Tool), string> byUser = call => call.User;
        using RatePolicy<(string User, string Tool)> policy = new RatePolicyBuilder<(string User, string Tool)>()
            .UseTimeProvider(_time)
            .AddLayer("user", byUser, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), int.MaxValue))
            .AddNestedLayer("tool", byUser, call => call.Tool, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), Cap))
            .WithMaxSubKeysPerKey(2)
            .Build();
        for (int round = 0; round < 1_000; round++)
        {
            _time.Advance(TimeSpan.FromMinutes(2)); // every held tool idle
            long[,,] admitted = new long[Threads, users.Length, tools.Length];
            WhileSweeping(policy, () => Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, thread =>
            {
                var random = new Random(round * Threads + thread);
                for (int i = 0; i < 3 * Cap; i++)
                {
                    int user = random.Next(users.Length);
                    int tool = random.Next(tools.Length);
                    using PolicyLease lease = policy.Acquire((users[user], tools[tool]));
                    if (lease.IsAcquired)
                    {
                        admitted[thread, user, tool]++;
                    }
                }
            }));

            for (int user = 0; user < users.Length; user++)
            {
                int toolsUsed = 0;
                for (int tool = 0; tool < tools.Length; tool++)
                {
                    long total = Enumerable.Range(0, Threads).Sum(thread => admitted[thread, user, tool]);
                    Assert.InRange(total, 0, Cap);
                    Assert.Equal(total, policy.GetUsage((users[user], tools[tool]), "tool").Used);
                    toolsUsed += total > 0 ? 1 : 0;
                }

                Assert.InRange(toolsUsed, 1, 2);
            }
        }
    }

    [Fact]
    public void Overruns_FourThreads_UsageIsExactlyTheActualsAndOnlyOverrunsPassTheCap()
    {
        using RatePolicy<string> policy = new RatePolicyBuilder<string>()
            .UseTimeProvider(_time)
            .AddLayer("tokens", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100_000).Counting(PolicyMeter.Tokens))
            .Build();
        long[] actuals = new long[Threads];
        long[] overruns = new long[Threads];

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, thread =>
        {
            var random = new Random(thread);
            for (int i = 0; i < RequestsPerThread; i++)
            {
                long estimate = random.Next(1, 50);
                using PolicyLease lease = policy.Acquire("alice", new RequestCost(estimate, 0));
                if (lease.IsAcquired)
                {
                    long actual = random.Next(0, 100);
                    overruns[thread] += lease.Reconcile(new RequestCost(actual, 0)).Tokens;
                    actuals[thread] += actual;
                }
            }
        });

        long used = policy.GetUsage("alice", "tokens").Used;
        Assert.Equal(actuals.Sum(), used);
        Assert.True(used <= 100_000 + overruns.Sum(), $"used {used} passes the cap by more than the reported overruns {overruns.Sum()}");
    }

    [Fact]
    public void RefusedRequests_FourThreads_ConsumeNothingOnTheLayersBeforeTheRefusal()
    {
        using RatePolicy<string> policy = new RatePolicyBuilder<string>()
            .UseTimeProvider(_time)
            .AddLayer("ip", user => "10.0.0.1", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), int.MaxValue))
            .AddLayer("tokens", user => "10.0.0.1", PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(1), 6, int.MaxValue).Counting(PolicyMeter.Tokens))
            .AddLayer("cost", user => "10.0.0.1", PolicyRule.Calendar(CalendarPeriod.Day, long.MaxValue / 4).Counting(PolicyMeter.Money))
            .AddLayer("user", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100))
            .Build();
        long[] admitted = new long[Threads];

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, thread =>
        {
            for (int i = 0; i < RequestsPerThread; i++)
            {
                if (policy.Acquire($"user {i % 50}", new RequestCost(7, 3)).IsAcquired)
                {
                    admitted[thread]++;
                }
            }
        });

        Assert.Equal(50 * 100, admitted.Sum());
        Assert.Equal(admitted.Sum(), policy.GetUsage("any", "ip").Used);
        Assert.Equal(admitted.Sum() * 7, policy.GetUsage("any", "tokens").Used);
        Assert.Equal(admitted.Sum() * 3, policy.GetUsage("any", "cost").Used);
    }

    [Fact]
    public void SoftThresholds_FourThreadsOnOneKey_EachThresholdReportedExactlyOnce()
    {
        var reported = new System.Collections.Concurrent.ConcurrentBag<double>();
        using RatePolicy<string> policy = new RatePolicyBuilder<string>()
            .UseTimeProvider(_time)
            .AddLayer("alerts", user => user, PolicyRule.Calendar(CalendarPeriod.Day, 10_000).Counting(PolicyMeter.Money).AsSoft(0.5, 0.8, 1.0, 1.2))
            .OnThresholdCrossed(crossing => reported.Add(crossing.Threshold))
            .Build();

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, _ =>
        {
            for (int i = 0; i < 4_000; i++)
            {
                using PolicyLease lease = policy.Acquire("alice", new RequestCost(0, 1));
            }
        });

        Assert.Equal(16_000, policy.GetUsage("alice", "alerts").Used);
        Assert.Equal([0.5, 0.8, 1.0, 1.2], reported.Order());
    }

    [Fact]
    public async Task TierChangesUnderLoad_KeepTheUsageAndNeverPassTheLargerCap()
    {
        using RatePolicy<string> policy = new RatePolicyBuilder<string>()
            .UseTimeProvider(_time)
            .UseTiers(_ => "t", new PolicyTiers { ["t"] = { ["requests"] = 3_000 } })
            .AddLayer("requests", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)))
            .Build();
        long[] admitted = new long[Threads];
        using var done = new CancellationTokenSource();
        Task flipper = Task.Run(() =>
        {
            for (int flip = 0; !done.IsCancellationRequested; flip++)
            {
                policy.UpdateTiers(new PolicyTiers { ["t"] = { ["requests"] = flip % 2 == 0 ? 1_000 : 3_000 } });
            }
        });

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, thread =>
        {
            for (int i = 0; i < 5_000; i++)
            {
                if (policy.Acquire("alice").IsAcquired)
                {
                    admitted[thread]++;
                }
            }
        });
        done.Cancel();
        await flipper;

        long used = policy.GetUsage("alice", "requests").Used;
        Assert.Equal(admitted.Sum(), used);
        Assert.InRange(used, 1_000, 3_000);

        // Now pinned low: the usage counted stays, and nothing more passes until the window ends.
        policy.UpdateTiers(new PolicyTiers { ["t"] = { ["requests"] = 1_000 } });
        Assert.False(policy.Acquire("alice").IsAcquired);
        Assert.Equal(used, policy.GetUsage("alice", "requests").Used);
    }

    [Fact]
    public void UpdateTiers_TwoThreadsAtOnce_LeaveEveryLayerOnOneOfTheUpdates()
    {
        const int Layers = 16;
        RatePolicyBuilder<string> builder = new RatePolicyBuilder<string>()
            .UseTimeProvider(_time)
            .UseTiers(_ => "t", Tiers(Layers, 1));
        for (int layer = 0; layer < Layers; layer++)
        {
            builder.AddLayer($"layer {layer}", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)));
        }

        using RatePolicy<string> policy = builder.Build();
        PolicyTiers[] updates = [Tiers(Layers, 1_000), Tiers(Layers, 2_000)];
        using var start = new Barrier(2);
        for (int round = 0; round < 2_000; round++)
        {
            Parallel.For(0, 2, new ParallelOptions { MaxDegreeOfParallelism = 2 }, thread =>
            {
                start.SignalAndWait();
                policy.UpdateTiers(updates[thread]);
            });

            long[] limits = [.. policy.GetTiers()["t"].Values];
            Assert.True(limits.Distinct().Count() == 1, $"round {round}: the layers ended on a mix of two updates: {string.Join(", ", limits)}");
        }

        static PolicyTiers Tiers(int layers, long limit)
        {
            var tiers = new PolicyTiers();
            for (int layer = 0; layer < layers; layer++)
            {
                tiers["t"][$"layer {layer}"] = limit;
            }

            return tiers;
        }
    }

    /// <summary>Runs <paramref name="work"/> while another thread sweeps every key table of the policy, over and over.</summary>
    private static void WhileSweeping<TContext>(RatePolicy<TContext> policy, Action work)
    {
        using var stop = new CancellationTokenSource();
        var sweeper = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                policy.SweepAll();
            }
        });
        sweeper.Start();
        try
        {
            work();
        }
        finally
        {
            stop.Cancel();
            sweeper.Join();
        }
    }

    [Fact]
    public void Concurrency_FourThreads_NeverMoreStreamsOpenThanTheCap()
    {
        // Each thread holds what it was admitted for a moment, counting the streams open at once; the concurrency layer must
        // never let more than its cap be open, while other layers refuse and roll back some of its admissions. A round in
        // which the threads never overlapped (a loaded machine running them one at a time: seen once in CI) proves
        // nothing, so rounds go on, each on a fresh policy, until one saw the streams layer refuse (at most ten).
        const int Cap = 1; // 4 threads on 2 cores: two at a time at most, so a cap of one is what they contend for
        int open = 0;
        int mostOpen = 0;
        long admitted = 0;
        long refusedByStreams = 0;
        for (int round = 0; round < 10 && Interlocked.Read(ref refusedByStreams) == 0; round++)
        {
            using RatePolicy<string> policy = new RatePolicyBuilder<string>()
                .UseTimeProvider(_time)
                .AddLayer("streams", user => user, PolicyRule.Concurrency(Cap))
                .AddLayer("tokens", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), int.MaxValue).Counting(PolicyMeter.Tokens))
                .AddGlobalLayer("half", PolicyRule.TokenBucket(tokenLimit: RequestsPerThread * Threads / 4, tokensPerPeriod: 1, TimeSpan.FromHours(1))) // refuses once drained: the streams' admissions are rolled back
                .Build();

            Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, thread =>
            {
                var random = new Random((round * Threads) + thread);
                for (int i = 0; i < RequestsPerThread; i++)
                {
                    using PolicyLease lease = policy.Acquire("alice", new RequestCost(random.Next(1, 100), 0));
                    if (!lease.IsAcquired)
                    {
                        if (lease.BlockingLayer == "streams")
                        {
                            Interlocked.Increment(ref refusedByStreams);
                        }

                        continue;
                    }

                    int now = Interlocked.Increment(ref open);
                    for (int seen = Volatile.Read(ref mostOpen); now > seen && Interlocked.CompareExchange(ref mostOpen, now, seen) != seen; seen = Volatile.Read(ref mostOpen))
                    {
                    }

                    Interlocked.Increment(ref admitted);
                    Thread.SpinWait(random.Next(500, 3_000)); // the stream runs, long enough for the others to try meanwhile
                    Interlocked.Decrement(ref open); // before the dispose frees its slot
                }
            });

            Assert.Equal(0, policy.GetUsage("alice", "streams").Used); // every slot came back
        }

        Assert.InRange(mostOpen, 1, Cap);
        Assert.True(admitted > 0 && refusedByStreams > 0, $"admitted {admitted}, refused by the streams layer {refusedByStreams}: the cap was never reached, or never left room");
    }
}
