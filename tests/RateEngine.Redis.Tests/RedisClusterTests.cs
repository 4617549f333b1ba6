using System.Threading.RateLimiting;
using RateEngine.Redis.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>The Redis mode on a real three-master Redis Cluster: keys spread over the slots, a partition's keys in one slot.</summary>
public sealed class RedisClusterTests : IClassFixture<RedisClusterTests.Cluster>
{
    private readonly ConnectionMultiplexer _connection;

    public RedisClusterTests(Cluster cluster) => _connection = cluster.Connection;

    public static TheoryData<string> Modes => ["exact fixed", "exact bucket", "exact counter", "exact log", "hybrid fixed", "hybrid counter"];

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task AcquireAsync_KeysAcrossTheSlots_EachKeyAdmitsExactlyItsLimit(string mode)
    {
        const int Limit = 5;
        string prefix = "cluster-" + Guid.NewGuid().ToString("N");
        var options = new RedisLimiterOptions
        {
            Connection = _connection,
            KeyPrefix = prefix,
            SyncTimeout = TimeSpan.FromSeconds(2),
            Hybrid = mode.StartsWith("hybrid", StringComparison.Ordinal) ? new RedisHybridOptions() : null,
        };
        TimeSpan window = TimeSpan.FromMinutes(10);
        await using PartitionedRateLimiter<string> limiter = mode.Split(' ')[1] switch
        {
            "fixed" => RedisLimiter.CreateFixedWindow<string>(key => key, _ => new FixedWindowRateLimiterOptions { PermitLimit = Limit, Window = window }, options),
            "bucket" => RedisLimiter.CreateTokenBucket<string>(
                key => key, _ => new TokenBucketRateLimiterOptions { TokenLimit = Limit, TokensPerPeriod = 1, ReplenishmentPeriod = window }, options),
            "counter" => RedisLimiter.CreateSlidingWindowCounter<string>(
                key => key, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = Limit, Window = window, SegmentsPerWindow = 4 }, options),
            _ => RedisLimiter.CreateSlidingWindowLog<string>(key => key, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = Limit, Window = window }, options),
        };

        string[] users = [.. Enumerable.Range(0, 40).Select(i => $"user-{i}")];
        foreach (string user in users)
        {
            int admitted = 0;
            for (int i = 0; i <= Limit; i++)
            {
                admitted += (await limiter.AcquireAsync(user)).IsAcquired ? 1 : 0;
            }

            Assert.Equal(Limit, admitted);
        }

        // The keys spread over all three masters.
        int[] slots = [.. users.Select(user => _connection.HashSlot($"{prefix}:{{{user}}}:x"))];
        Assert.Equal(3, slots.Select(slot => _connection.GetServer(_connection.GetEndPoints()[0]).ClusterConfiguration!.GetBySlot(slot)!.EndPoint).Distinct().Count());
    }

    [Fact]
    public void KeyOf_OnePartition_AllItsKeysShareOneSlot()
    {
        string[] suffixes = ["fw", "tb", "swc", "swl"];
        int[] slots = [.. suffixes.Select(suffix => _connection.HashSlot($"rateengine:{{user-42}}:{suffix}"))];
        Assert.Single(slots.Distinct());
        Assert.NotEqual(_connection.HashSlot("rateengine:{user-42}:fw"), _connection.HashSlot("rateengine:{user-43}:fw"));
    }

    [Fact]
    public async Task RedisRatePolicy_OnACluster_DecidesEveryLayerInOneSlot_PoliciesOfTwoPrefixesOnTwoSlots()
    {
        // Two tenants' policies: each keeps all of its keys under its own hash tag, so one script reaches every layer.
        RedisRatePolicy<(string User, string Team)> Tenant(string prefix) =>
            new RedisRatePolicyBuilder<(string User, string Team)>(new RedisLimiterOptions { Connection = _connection, KeyPrefix = prefix, SyncTimeout = TimeSpan.FromSeconds(2) })
                .AddLayer("user", call => call.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(10), 3))
                .AddLayer("team tokens/day", call => call.Team, PolicyRule.Calendar(CalendarPeriod.Day, 1_000).Counting(PolicyMeter.Tokens))
                .AddGlobalLayer("global", PolicyRule.SlidingWindowCounter(TimeSpan.FromMinutes(10), 5, 100))
                .Build();
        const string TenantA = "tenant-a"; // fixed: a fresh cluster per run, and two prefixes known to hash apart
        const string TenantB = "tenant-b";
        using RedisRatePolicy<(string User, string Team)> a = Tenant(TenantA);
        using RedisRatePolicy<(string User, string Team)> b = Tenant(TenantB);

        foreach (RedisRatePolicy<(string User, string Team)> policy in new[] { a, b })
        {
            int admitted = 0;
            for (int i = 0; i < 5; i++)
            {
                using PolicyLease lease = await policy.AcquireAsync(("ann", "red"), new RequestCost(100, 0));
                if (lease.IsAcquired)
                {
                    admitted++;
                    await lease.ReconcileAsync(new RequestCost(40, 0));
                }
            }

            Assert.Equal(3, admitted);
            Assert.Equal([3, 120, 3], (await policy.GetUsageAsync(("ann", "red"))).Select(usage => usage.Used));
        }

        Assert.NotEqual(_connection.HashSlot($"{{{TenantA}}}:user:ann"), _connection.HashSlot($"{{{TenantB}}}:user:ann"));
        Assert.Equal(_connection.HashSlot($"{{{TenantA}}}:user:ann"), _connection.HashSlot($"{{{TenantA}}}:global:"));
    }

    public sealed class Cluster : IDisposable
    {
        private readonly RedisCluster _cluster = new();

        public Cluster() => Connection = _cluster.Connect();

        public ConnectionMultiplexer Connection { get; }

        public void Dispose()
        {
            Connection.Dispose();
            _cluster.Dispose();
        }
    }
}
