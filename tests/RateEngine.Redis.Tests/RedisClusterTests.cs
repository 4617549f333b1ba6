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
