using System.Diagnostics;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Redis.Scripts;
using RateEngine.Redis.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>A Redis that dies and comes back: each test has a server of its own to kill.</summary>
public sealed class RedisFailureTests : IDisposable
{
    private readonly RedisServer _server = new();
    private readonly ConnectionMultiplexer _connection;
    private readonly FakeTimeProvider _cooldownClock = new();

    public RedisFailureTests() => _connection = _server.Connect();

    public void Dispose()
    {
        _connection.Dispose();
        _server.Dispose();
    }

    [Fact]
    public async Task AttemptAcquire_ServerDown_FailClosedRefusesWithinTheBoundThenStopsCallingUntilTheCooldownEnds()
    {
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired); // async: loading the script may pass the sync bound under load

        _server.Kill();
        var clock = Stopwatch.StartNew();
        using RateLimitLease refused = limiter.AttemptAcquire("ann");
        TimeSpan waited = clock.Elapsed;
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.Equal("Redis is unavailable; refused (FailClosed).", reason); // not the store's error: its endpoint, another caller's key
        // Not a timing of the path: a bound kept against one not kept (the connection's own 5 s), with room for a loaded machine.
        Assert.True(waited < TimeSpan.FromSeconds(3), $"the sync path blocked {waited.TotalMilliseconds:F0} ms (bound 200 ms)");
        Assert.Equal(1, engine.Failures);

        // The breaker is open: refusals come at once, without another call to the dead server.
        Assert.False(limiter.AttemptAcquire("ann").IsAcquired);
        Assert.False((await limiter.AcquireAsync("bob")).IsAcquired);
        Assert.Equal(1, engine.Failures);

        // Redis comes back; after the cool-down the next call reaches it again and succeeds.
        _server.Start();
        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        Assert.True(await EventuallyAcquired(limiter, "carl"), "the limiter did not recover when Redis came back");
    }

    [Fact]
    public async Task AttemptAcquire_HalfOpenProbeMeetsADisposedConnection_TheNextCallerProbesAtOnce()
    {
        // The probe's call could not be sent (the app disposed its connection): nothing would close or trip the breaker for
        // it, so it keeps no claim, and the next caller probes now rather than getting the failure mode for a cool-down.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed);
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        _server.Kill();
        Assert.False(limiter.AttemptAcquire("ann").IsAcquired); // the breaker trips
        _cooldownClock.Advance(TimeSpan.FromSeconds(2)); // half-open
        await _connection.DisposeAsync();

        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire("ann"));
        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire("bob"));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await limiter.AcquireAsync("carl"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PolicyAcquire_HalfOpenProbeMeetsADisposedConnection_TheNextCallerProbesAtOnce(bool hybrid)
    {
        // As for the limiter: the probe's call could not be sent, so it keeps no claim, and every next caller meets the same
        // error rather than the failure mode's refusal for a cool-down (the policy kept the probe, in both modes; in hybrid
        // mode the error comes as the reservation's fault). Each caller's key is new, so that it needs Redis.
        using RedisRatePolicy<string> policy = Policy("user/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10), TimeSpan.FromMilliseconds(200), hybrid);
        Assert.True((await policy.AcquireAsync("ann", RequestCost.None)).IsAcquired);
        _server.Kill();
        Assert.False(policy.Acquire("amy", RequestCost.None).IsAcquired); // the breaker trips
        _cooldownClock.Advance(TimeSpan.FromSeconds(2)); // half-open
        await _connection.DisposeAsync();

        Assert.Throws<ObjectDisposedException>(() => policy.Acquire("abe", RequestCost.None));
        Assert.Throws<ObjectDisposedException>(() => policy.Acquire("bob", RequestCost.None));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await policy.AcquireAsync("carl", RequestCost.None));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await policy.GetUsageAsync("dan"));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await policy.AcquireAsync("eve", RequestCost.None));
    }

    [Fact]
    public async Task AcquireAsync_ServerStillDownAfterTheCooldown_OneCallerProbesAndTheOthersAreAnsweredAtOnce()
    {
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        _server.Kill();
        Assert.False(limiter.AttemptAcquire("ann").IsAcquired);
        Assert.Equal(1, engine.Failures);

        // The cool-down is over and Redis is still away: a burst of callers. One probes (its call waits out the client's
        // timeout); the rest get the failure mode's answer without a call, rather than each waiting for the same timeout.
        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        ValueTask<RateLimitLease>[] burst = Enumerable.Range(0, 8).Select(i => limiter.AcquireAsync("user" + i)).ToArray();
        Assert.Equal(7, burst.Count(pending => pending.IsCompleted));

        foreach (ValueTask<RateLimitLease> pending in burst)
        {
            using RateLimitLease lease = await pending;
            Assert.False(lease.IsAcquired);
        }

        Assert.Equal(2, engine.Failures); // the first failure and the probe's

        _server.Start();
        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        Assert.True(await EventuallyAcquired(limiter, "carl"), "the limiter did not recover when Redis came back");
    }

    [Fact]
    public async Task AcquireAsync_ServerDown_FailOpenAdmitsWithAReason()
    {
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailOpen);
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);

        _server.Kill();
        using RateLimitLease admitted = await limiter.AcquireAsync("ann");
        Assert.True(admitted.IsAcquired);
        Assert.True(admitted.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.Contains("FailOpen", reason, StringComparison.Ordinal);
        Assert.True(limiter.AttemptAcquire("ann").IsAcquired); // breaker open: admitted at once
    }

    [Fact]
    public async Task AcquireAsync_OutageAndRecovery_LoggedAndMeteredOncePerTransition()
    {
        var logger = new FakeLogger();
        string prefix = "telemetry-" + Guid.NewGuid().ToString("N");
        using var failures = new MetricCollector<long>(null, "RateEngine", "rateengine.redis.failures");
        using var degraded = new MetricCollector<long>(null, "RateEngine", "rateengine.redis.degraded");
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, prefix: prefix, logs: new SingleLoggerFactory(logger));
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);

        _server.Kill();
        for (int i = 0; i < 3; i++)
        {
            _cooldownClock.Advance(TimeSpan.FromSeconds(2)); // each call reaches the dead server and fails
            Assert.False(limiter.AttemptAcquire("ann").IsAcquired);
        }

        _server.Start();
        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        Assert.True(await EventuallyAcquired(limiter, "ann"));

        IReadOnlyList<FakeLogRecord> records = logger.Collector.GetSnapshot();
        Assert.Equal([LogLevel.Warning, LogLevel.Information], records.Select(record => record.Level));
        Assert.Contains(prefix, records[0].Message, StringComparison.Ordinal);
        Assert.Contains("FailClosed", records[0].Message, StringComparison.Ordinal);
        // Three calls reached the dead server; a loaded machine may fail a few more while the connection comes back.
        Assert.InRange(Mine(failures.GetMeasurementSnapshot(), prefix).Sum(m => m.Value), 3, 10);
        Assert.Equal([1L, -1L], Mine(degraded.GetMeasurementSnapshot(), prefix).Select(m => m.Value));
    }

    [Fact]
    public void Dispose_WhileDegraded_TakesTheLimiterOffTheDegradedMeter()
    {
        // The meter went down only when a call succeeded: a limiter disposed during an outage stayed counted as degraded
        // for good, and limiters made again (a reload, a test run) piled up phantom ones.
        string prefix = "retired-" + Guid.NewGuid().ToString("N");
        using var degraded = new MetricCollector<long>(null, "RateEngine", "rateengine.redis.degraded");
        PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, prefix: prefix);
        _server.Kill();
        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        Assert.False(limiter.AttemptAcquire("ann").IsAcquired);
        Assert.Equal(1, Mine(degraded.GetMeasurementSnapshot(), prefix).Sum(m => m.Value));

        limiter.Dispose();

        Assert.Equal(0, Mine(degraded.GetMeasurementSnapshot(), prefix).Sum(m => m.Value));
        _server.Start();
    }

    [Fact]
    public async Task AcquireAsync_HybridOnTheFallback_ARequestAboveTheNodesShareIsRefusedWithAReason()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateFixedWindow<string>(
            user => user,
            _ => new FixedWindowRateLimiterOptions { PermitLimit = 100, Window = TimeSpan.FromMinutes(1) },
            new RedisLimiterOptions
            {
                Connection = _connection, KeyPrefix = "fallback-" + Guid.NewGuid().ToString("N"), SyncTimeout = TimeSpan.FromMilliseconds(200),
                FailureMode = RedisFailureMode.LocalFallback, LocalFallbackShare = 0.25, FailureCooldown = TimeSpan.FromSeconds(1),
                TimeProvider = _cooldownClock, Hybrid = new RedisHybridOptions(),
            });
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        _server.Kill();
        for (int i = 0; i < 200 && (await limiter.AcquireAsync("ann")).IsAcquired; i++)
        {
            // until the block is spent and the refill fails: the breaker opens
        }

        // 50 permits fit the limit of 100 but not this node's fallback share of 25: refused for the outage, not an error.
        using RateLimitLease refused = await limiter.AcquireAsync("bob", 50);
        AssertRefusedAboveTheShare(refused);
        Assert.True((await limiter.AcquireAsync("bob", 25)).IsAcquired); // the share itself still passes
    }

    [Fact]
    public async Task AttemptAcquire_ExactOnTheFallback_ARequestAboveTheNodesShareIsRefusedWithAReason()
    {
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.LocalFallback, share: 0.25); // 100 → 25 here
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        _server.Kill();
        Assert.False(limiter.AttemptAcquire("ann", 26).IsAcquired); // the call that meets the outage answers from the share too
        using RateLimitLease refused = limiter.AttemptAcquire("ann", 26);
        AssertRefusedAboveTheShare(refused);
        Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire("ann", 101)); // above the limit itself: bad input
        Assert.True(limiter.AttemptAcquire("ann", 25).IsAcquired);
    }

    [Fact]
    public async Task AttemptAcquire_TokenBucketOnTheFallback_ARequestAboveTheNodesShareIsRefusedWithAReason()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateTokenBucket<string>(
            user => user,
            _ => new TokenBucketRateLimiterOptions { TokenLimit = 100, TokensPerPeriod = 100, ReplenishmentPeriod = TimeSpan.FromMinutes(1) },
            new RedisLimiterOptions
            {
                Connection = _connection, KeyPrefix = "bucket-fallback-" + Guid.NewGuid().ToString("N"), SyncTimeout = TimeSpan.FromMilliseconds(200),
                FailureMode = RedisFailureMode.LocalFallback, LocalFallbackShare = 0.25, FailureCooldown = TimeSpan.FromMinutes(1), TimeProvider = _cooldownClock,
            });
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        _server.Kill();
        Assert.False(limiter.AttemptAcquire("ann", 26).IsAcquired); // the call that meets the outage
        using RateLimitLease refused = limiter.AttemptAcquire("ann", 26);
        AssertRefusedAboveTheShare(refused);
        Assert.True(limiter.AttemptAcquire("ann", 25).IsAcquired);
    }

    private static void AssertRefusedAboveTheShare(RateLimitLease lease)
    {
        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.Contains("share", reason);
    }

    [Fact]
    public async Task AcquireAsync_ServerDown_LocalFallbackEnforcesThisNodesShare()
    {
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.LocalFallback, share: 0.25); // 100 → 25 here
        for (int i = 0; i < 30; i++)
        {
            Assert.True((await limiter.AcquireAsync("ann")).IsAcquired); // on Redis: 30 of 100
        }

        _server.Kill();
        int admitted = 0;
        for (int i = 0; i < 40; i++)
        {
            admitted += (await limiter.AcquireAsync("ann")).IsAcquired ? 1 : 0;
        }

        Assert.Equal(25, admitted); // the node's share, counted from the outage's start
        Assert.Equal(10, Enumerable.Range(0, 10).Count(_ => limiter.AttemptAcquire("bob").IsAcquired)); // every key its own share
        Assert.Throws<ArgumentOutOfRangeException>(() => Create(RedisFailureMode.LocalFallback, share: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Create(RedisFailureMode.LocalFallback, share: 1.5));
    }

    [Fact]
    public void AttemptAcquire_ServerDown_TokenBucketFallbackRefillsAtTheNodesShareOfTheRate()
    {
        // One token a second for the fleet, a quarter of it here. Rounded up to a whole token a second, this node alone
        // refilled at the fleet's whole rate for as long as the outage lasted.
        var clock = new FakeTimeProvider();
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateTokenBucket<string>(
            user => user,
            _ => new TokenBucketRateLimiterOptions { TokenLimit = 4, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromSeconds(1) },
            new RedisLimiterOptions
            {
                Connection = _connection, KeyPrefix = "bucket-" + Guid.NewGuid().ToString("N"), SyncTimeout = TimeSpan.FromMilliseconds(200),
                FailureMode = RedisFailureMode.LocalFallback, LocalFallbackShare = 0.25, FailureCooldown = TimeSpan.FromDays(1),
                TimeProvider = clock,
            });
        _server.Kill();
        int admitted = 0;
        for (int second = 0; second < 60; second++)
        {
            for (int i = 0; i < 5; i++)
            {
                admitted += limiter.AttemptAcquire("ann").IsAcquired ? 1 : 0;
            }

            clock.Advance(TimeSpan.FromSeconds(1));
        }

        // Its share of the burst (1), and of 60 s at a quarter of a token a second (15).
        Assert.InRange(admitted, 10, 16);
    }

    [Fact]
    public async Task LiveNodes_TheSetLostInARestart_ANodeBackFirstKeepsItsCountUntilTheOthersHadAnExpiryToReturn()
    {
        // The set of live nodes empties for everyone in a restart that loses it (or an outage longer than Expiry), and the
        // nodes come back one heartbeat at a time. The first back counted itself alone, and an outage right after ran on
        // the whole limit there: the fleet admitted up to 1 + 1/2 + 1/3 of it.
        // One node leaves first, and the first node hears the lower count just before the outage: that answer must not count
        // toward taking a lower count after it.
        (string prefix, PartitionedRateLimiter<string>[] nodes, ConnectionMultiplexer[] connections, FakeTimeProvider first) = await ThreeNodesAfterTheThirdLeft();
        try
        {
            // An outage longer than Expiry (the heartbeats fail meanwhile), and a restart that loses the set.
            _server.Kill();
            first.Advance(TimeSpan.FromSeconds(2));
            _server.Start();
            IDatabase database = _connection.GetDatabase();
            await Eventually(
                () =>
                {
                    first.Advance(TimeSpan.FromMilliseconds(200)); // the first node back beats alone
                    try
                    {
                        return database.SortedSetLength(prefix + ":nodes") == 1;
                    }
                    catch (Exception error) when (error is RedisException or TimeoutException)
                    {
                        return false; // not reconnected yet
                    }
                },
                "the first node registered again");
            await Task.Delay(200);
            Assert.True(Engine(nodes[0]).FallbackNodes >= 2, $"counted {Engine(nodes[0]).FallbackNodes}: itself alone, right after the restart");

            // Alone for a whole Expiry: the others are gone, and its share grows.
            await Eventually(
                () =>
                {
                    first.Advance(TimeSpan.FromMilliseconds(200));
                    return Engine(nodes[0]).FallbackNodes == 1;
                },
                "the first node counts itself alone once the others stayed away for Expiry");
        }
        finally
        {
            Dispose(nodes, connections);
        }
    }

    [Fact]
    public async Task LiveNodes_AHeartbeatThatWaitedOutAnOutage_DoesNotFinishAWindowOfLowerAnswersBegunBeforeIt()
    {
        // The client queues a heartbeat while the server is away and sends it once it is back: it does not fail, so only
        // its long round trip shows that an outage came between it and the lower answer before.
        (string prefix, PartitionedRateLimiter<string>[] nodes, ConnectionMultiplexer[] connections, FakeTimeProvider first) = await ThreeNodesAfterTheThirdLeft();
        try
        {
            _server.Freeze();
            first.Advance(TimeSpan.FromMilliseconds(200)); // its next heartbeat waits on the frozen server
            first.Advance(TimeSpan.FromSeconds(2)); // longer than Expiry on the node's clock
            await Task.Delay(2_500); // the second node's registration expires on the server's clock meanwhile, and its second of margin
            _server.Thaw();

            await Eventually(() => _connection.GetDatabase().SortedSetLength(prefix + ":nodes") == 1, "the held heartbeat answered 1");
            await Task.Delay(300);
            Assert.Equal(3, Engine(nodes[0]).FallbackNodes); // not 2: that window began before the outage
        }
        finally
        {
            Dispose(nodes, connections);
        }
    }

    [Fact]
    public async Task LiveNodes_AClientClockAheadByLessThanTheMargin_StillCountsTheOtherNode()
    {
        // Registrations carry a second of margin past their expiry, as concurrency slots do. Without it, a node whose client
        // clock ran ahead by a little more than Expiry less one heartbeat dropped the other's registration in every one of
        // its own heartbeats, counted itself alone, and an outage would have run on the whole cap as its share.
        string prefix = "skew-" + Guid.NewGuid().ToString("N");
        var heartbeats = new FakeTimeProvider();
        var clockA = new FakeTimeProvider(new DateTimeOffset(2026, 12, 8, 12, 0, 0, TimeSpan.Zero));
        var clockB = new FakeTimeProvider(clockA.GetUtcNow() + TimeSpan.FromSeconds(2) - TimeSpan.FromMilliseconds(200) + TimeSpan.FromMilliseconds(500));
        using ConnectionMultiplexer connectionA = _server.Connect();
        using ConnectionMultiplexer connectionB = _server.Connect();
        using PartitionedRateLimiter<string> nodeA = LiveNodes(connectionA, prefix, heartbeats, expiry: TimeSpan.FromSeconds(2), clientClock: clockA);
        using PartitionedRateLimiter<string> nodeB = LiveNodes(connectionB, prefix, heartbeats, expiry: TimeSpan.FromSeconds(2), clientClock: clockB);

        await Eventually(() => Engine(nodeB).FallbackNodes == 2 && Engine(nodeA).FallbackNodes == 2, "both nodes count two", heartbeats);
    }

    [Fact]
    public async Task DisposeAsync_LiveNodesAfterTheAppDisposedItsConnection_DisposesTheRest()
    {
        // The registry's goodbye met ObjectDisposedException from a connection the app had disposed first, and the limiter's
        // dispose stopped there: its fallback and its blocks were never disposed.
        ConnectionMultiplexer connection = _server.Connect();
        PartitionedRateLimiter<string> node = LiveNodes(connection, "gone-" + Guid.NewGuid().ToString("N"), _cooldownClock);
        Assert.True((await node.AcquireAsync("ann")).IsAcquired);
        await connection.DisposeAsync();

        await node.DisposeAsync();

        Assert.Throws<ObjectDisposedException>(() => node.AttemptAcquire("ann"));
    }

    [Fact]
    public async Task AttemptAcquire_ServerDown_LocalFallbackFromLiveNodesEnforcesOneNthOnEachNode()
    {
        string prefix = "live-" + Guid.NewGuid().ToString("N");
        ConnectionMultiplexer[] connections = [.. Enumerable.Range(0, 3).Select(_ => _server.Connect())];
        PartitionedRateLimiter<string>[] nodes = [.. connections.Select(connection => LiveNodes(connection, prefix, _cooldownClock))];
        try
        {
            // Each node registered at its creation; after further heartbeats every node has counted all three.
            await Eventually(() => nodes.All(node => Engine(node).FallbackNodes == 3), "every node counts three live nodes", _cooldownClock);
            Assert.True((await nodes[0].AcquireAsync("ann", 10)).IsAcquired); // on Redis: 10 of 100

            _server.Kill();
            _cooldownClock.Advance(TimeSpan.FromSeconds(5)); // heartbeats fail meanwhile: the count read last stays
            foreach (PartitionedRateLimiter<string> node in nodes)
            {
                int admitted = 0;
                for (int i = 0; i < 40; i++)
                {
                    admitted += node.AttemptAcquire("ann").IsAcquired ? 1 : 0; // the first fails within the sync bound
                }

                Assert.Equal(33, admitted); // 100 / 3 on each node: 99 across the fleet
                Assert.Equal(3, Engine(node).FallbackNodes);
            }
        }
        finally
        {
            Dispose(nodes, connections);
        }
    }

    [Fact]
    public async Task AttemptAcquire_ANodeLeavesAnotherFallsSilent_TheSurvivorsShareGrows()
    {
        string prefix = "live-" + Guid.NewGuid().ToString("N");
        var silent = new FakeTimeProvider(); // a node whose heartbeats stop: its clock never moves again
        ConnectionMultiplexer[] connections = [.. Enumerable.Range(0, 3).Select(_ => _server.Connect())];
        List<PartitionedRateLimiter<string>> nodes =
        [
            LiveNodes(connections[0], prefix, _cooldownClock, expiry: TimeSpan.FromSeconds(1)),
            LiveNodes(connections[1], prefix, _cooldownClock, expiry: TimeSpan.FromSeconds(1)),
        ];
        try
        {
            // The silent node beats once, at its creation: it joins when the other two are registered, so it counts three.
            await Eventually(() => Engine(nodes[0]).FallbackNodes == 2 && Engine(nodes[1]).FallbackNodes == 2, "two nodes count two", _cooldownClock);
            nodes.Add(LiveNodes(connections[2], prefix, silent, expiry: TimeSpan.FromSeconds(1)));
            await Eventually(() => Engine(nodes[2]).FallbackNodes == 3, "the third node counts three");
            await Eventually(() => Engine(nodes[0]).FallbackNodes == 3, "the first node counts three", _cooldownClock);

            // The silent node's registration expires on the server's clock; the first node's next heartbeat drops it.
            await Task.Delay(TimeSpan.FromSeconds(1.2));
            await Eventually(() => Engine(nodes[0]).FallbackNodes == 2, "the silent node is dropped", _cooldownClock);

            // The second node is disposed: it leaves at once, long before its registration would expire.
            await nodes[1].DisposeAsync();
            Assert.Equal(1, await connections[0].GetDatabase().SortedSetLengthAsync(prefix + ":nodes"));
            await Eventually(() => Engine(nodes[0]).FallbackNodes == 1, "the disposed node is dropped", _cooldownClock);

            _server.Kill();
            int admitted = 0;
            for (int i = 0; i < 120; i++)
            {
                admitted += nodes[0].AttemptAcquire("ann").IsAcquired ? 1 : 0;
            }

            Assert.Equal(100, admitted); // the only live node enforces the whole limit
        }
        finally
        {
            Dispose(nodes, connections);
        }
    }

    [Fact]
    public async Task Heartbeat_NodeWithAShorterExpiryBeatsLast_KeepsTheSetAsLongAsTheLongestRegistration()
    {
        IDatabase database = _connection.GetDatabase();
        RedisKey key = "{live-" + Guid.NewGuid().ToString("N") + "}:nodes";
        long expiryA = (long)TimeSpan.FromSeconds(30).TotalMicroseconds;
        long expiryB = (long)TimeSpan.FromSeconds(5).TotalMicroseconds;
        Assert.Equal(1, (long)await database.ScriptEvaluateAsync(NodeScripts.Heartbeat, new { Key = key, Node = "a", Now = -1L, Expiry = expiryA }));
        Assert.Equal(2, (long)await database.ScriptEvaluateAsync(NodeScripts.Heartbeat, new { Key = key, Node = "b", Now = -1L, Expiry = expiryB }));
        await database.ScriptEvaluateAsync(NodeScripts.Leave, new { Key = key, Node = "b" });

        // Node a is registered for 30 s: the set must outlive b's 5 s, or a's registration expires with it.
        TimeSpan? left = await database.KeyTimeToLiveAsync(key);
        Assert.NotNull(left);
        Assert.True(left > TimeSpan.FromSeconds(25), $"the set expires in {left}");
    }

    [Fact]
    public void AttemptAcquire_ServerDownFromTheStart_LocalFallbackFromLiveNodesAssumesTheMinimumNodeCount()
    {
        _server.Kill();
        using PartitionedRateLimiter<string> node = LiveNodes(_connection, "live-" + Guid.NewGuid().ToString("N"), _cooldownClock, minimum: 4);
        int admitted = 0;
        for (int i = 0; i < 40; i++)
        {
            admitted += node.AttemptAcquire("ann").IsAcquired ? 1 : 0;
        }

        Assert.Equal(25, admitted);
        Assert.Equal(4, Engine(node).FallbackNodes);
    }

    [Fact]
    public void Create_LocalFallbackLiveNodesMisconfigured_ThrowsAtConstruction()
    {
        RedisLimiterOptions Options(Action<RedisLimiterOptions> change)
        {
            var options = new RedisLimiterOptions
            {
                Connection = _connection,
                FailureMode = RedisFailureMode.LocalFallback,
                LocalFallbackLiveNodes = new RedisLiveNodeOptions(),
            };
            change(options);
            return options;
        }

        PartitionedRateLimiter<string> Create(RedisLimiterOptions options) => RedisLimiter.CreateFixedWindow<string>(
            user => user, _ => new FixedWindowRateLimiterOptions { PermitLimit = 100, Window = TimeSpan.FromMinutes(1) }, options);

        Assert.Throws<ArgumentException>(() => Create(Options(o => o.LocalFallbackShare = 0.5))); // configured and derived
        Assert.Throws<ArgumentException>(() => Create(Options(o => o.FailureMode = RedisFailureMode.FailClosed)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Create(Options(o => o.LocalFallbackLiveNodes!.HeartbeatInterval = TimeSpan.Zero)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Create(Options(o => o.LocalFallbackLiveNodes!.Expiry = o.LocalFallbackLiveNodes.HeartbeatInterval)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Create(Options(o => o.LocalFallbackLiveNodes!.MinimumNodeCount = 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Create(Options(o => o.LocalFallbackLiveNodes = null))); // neither
        Assert.Throws<ArgumentException>(() => new RedisRatePolicyBuilder<string>(Options(_ => { })).AddGlobalLayer("g", PolicyRule.Concurrency(1)).Build());
        using PartitionedRateLimiter<string> valid = Create(Options(_ => { }));
    }

    [Fact]
    public async Task AttemptAcquire_ServerDown_LeavesNoUnobservedTaskException()
    {
        int unobserved = 0;
        void Count(object? sender, UnobservedTaskExceptionEventArgs e) => Interlocked.Increment(ref unobserved);
        TaskScheduler.UnobservedTaskException += Count;
        try
        {
            using (PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed))
            {
                // The set-up acquire is async: its first call loads the script, which a loaded machine may not do within
                // the sync bound (this test is about the dead server, not the live one).
                Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
                _server.Kill();
                for (int i = 0; i < 5; i++)
                {
                    _cooldownClock.Advance(TimeSpan.FromSeconds(2)); // every attempt reaches the dead server
                    Assert.False(limiter.AttemptAcquire("ann").IsAcquired);
                }
            }

            await Task.Delay(TimeSpan.FromSeconds(2.5)); // the given-up calls time out on the connection
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            Assert.Equal(0, unobserved);
        }
        finally
        {
            TaskScheduler.UnobservedTaskException -= Count;
        }
    }

    [Theory]
    [InlineData(RedisFailureMode.FailClosed, HealthStatus.Unhealthy)]
    [InlineData(RedisFailureMode.FailOpen, HealthStatus.Degraded)]
    [InlineData(RedisFailureMode.LocalFallback, HealthStatus.Degraded)]
    public async Task HealthCheck_ServerDownThenBack_ReportsByFailureModeThenHealthy(RedisFailureMode mode, HealthStatus whenDown)
    {
        string prefix = "health-" + Guid.NewGuid().ToString("N");
        using PartitionedRateLimiter<string> limiter = Create(mode, share: 0.5, prefix: prefix);
        IHealthCheck check = RedisLimiter.HealthCheck(limiter);
        var context = new HealthCheckContext { Registration = new HealthCheckRegistration("redis", check, HealthStatus.Unhealthy, tags: null) };
        Assert.Equal(HealthStatus.Healthy, (await check.CheckHealthAsync(context)).Status);

        _server.Kill();
        HealthCheckResult down = await check.CheckHealthAsync(context);
        Assert.Equal(whenDown, down.Status);
        Assert.Equal(prefix, down.Data["keyPrefix"]);
        Assert.Equal(mode.ToString(), down.Data["failureMode"]);
        Assert.DoesNotContain(down.Data.Values, value => value is string text && text.Contains("ann", StringComparison.Ordinal));

        _server.Start();
        HealthCheckResult back = default;
        for (int attempt = 0; attempt < 100; attempt++)
        {
            back = await check.CheckHealthAsync(context);
            if (back.Status == HealthStatus.Healthy)
            {
                break;
            }

            await Task.Delay(50);
        }

        Assert.Equal(HealthStatus.Healthy, back.Status);
    }

    [Fact]
    public async Task HealthCheck_OutageSeenByARequestThenNoTraffic_TurnsHealthyWhenRedisAnswersAgain()
    {
        // A failed check takes the node out of its load balancer's rotation: no request comes to close the breaker, so the
        // check's own answered PING must, or the node stays unhealthy while Redis answers.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, prefix: "rotation-" + Guid.NewGuid().ToString("N"));
        IHealthCheck check = RedisLimiter.HealthCheck(limiter);
        var context = new HealthCheckContext { Registration = new HealthCheckRegistration("redis", check, HealthStatus.Unhealthy, tags: null) };
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);

        _server.Kill();
        Assert.False(limiter.AttemptAcquire("ann").IsAcquired); // the request's call fails: the breaker opens
        Assert.Equal(HealthStatus.Unhealthy, (await check.CheckHealthAsync(context)).Status);

        Assert.Equal(HealthStatus.Unhealthy, (await check.CheckHealthAsync(context)).Status); // down: the check's probe failed too

        _server.Start();
        HealthStatus back = HealthStatus.Unhealthy;
        for (int attempt = 0; attempt < 100 && back != HealthStatus.Healthy; attempt++)
        {
            await Task.Delay(50); // the connection comes back
            _cooldownClock.Advance(TimeSpan.FromSeconds(2)); // the probe waits for the cool-down, as a request's would
            back = (await check.CheckHealthAsync(context)).Status;
        }

        Assert.Equal(HealthStatus.Healthy, back);
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task PolicyCharges_WhileRedisIsAway_AreEachCountedOnTheLeaseAndSentInOrderOnceItIsBack()
    {
        // A stream's chunks are charged while Redis is down: the first charge's settle is pending, and the next one must
        // queue behind it rather than be lost (a settle at what was consumed would then miss it).
        using RedisRatePolicy<string> policy = Policy(
            "tokens/hour", PolicyRule.FixedWindow(TimeSpan.FromHours(1), 1_000_000).Counting(PolicyMeter.Tokens), TimeSpan.FromMilliseconds(200));
        PolicyLease lease = await policy.AcquireAsync("ann", new RequestCost(100, 0));
        Assert.True(lease.IsAcquired);

        _server.Kill();
        await Assert.ThrowsAnyAsync<Exception>(() => lease.ChargeAsync(new RequestCost(150, 0)).AsTask());
        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        await Assert.ThrowsAnyAsync<Exception>(() => lease.ChargeAsync(new RequestCost(70, 0)).AsTask());
        Assert.Equal(220, lease.Consumed.Tokens);

        _server.Start(); // empty: the acquire's 100 went with the old process, the two overruns are still owed
        long usedAfterRestart = -1;
        for (int attempt = 0; attempt < 200 && usedAfterRestart < 0; attempt++)
        {
            try
            {
                usedAfterRestart = (await policy.GetUsageAsync("ann"))[0].Used;
            }
            catch (Exception error) when (error is RedisException or TimeoutException or InvalidOperationException)
            {
                // Not an assertion's failure: the connection comes back, and the breaker lets a call through after its cooldown.
                await Task.Delay(50);
                _cooldownClock.Advance(TimeSpan.FromSeconds(2));
            }
        }

        Assert.Equal(0, usedAfterRestart);

        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        await lease.ReconcileConsumedAsync(); // sends the two pending charges first, in order; at 220 nothing more is owed

        Assert.Equal(50 + 70, (await policy.GetUsageAsync("ann"))[0].Used);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PolicyAcquire_ThatTimesOutWhileItsScriptStillRuns_DoesNotKeepItsSlot(bool sync)
    {
        // Redis pauses its clients (5 s) longer than the client's timeout (2 s, noticed on the client's 1 s heartbeat, so 2 to
        // 3 s): the acquire is refused (fail closed) but its script runs once the pause ends and takes the user's only
        // stream slot. Held until the lease timeout (10 minutes), it would lock the user out; the release sent after the
        // failure runs after it and frees it. The synchronous Acquire's own bound (4.5 s) outlasts the client's timeout, so
        // there the client fails the call, not the bound.
        using ConnectionMultiplexer admin = _server.Connect(admin: true);
        using RedisRatePolicy<string> policy = Policy("streams", PolicyRule.Concurrency(1), TimeSpan.FromSeconds(sync ? 4.5 : 2));
        (await policy.AcquireAsync("ann", RequestCost.None)).Dispose(); // the script is loaded

        await admin.GetServer(admin.GetEndPoints()[0]).ExecuteAsync("CLIENT", "PAUSE", "5000", "ALL");
        using PolicyLease refused = sync ? policy.Acquire("ann", RequestCost.None) : await policy.AcquireAsync("ann", RequestCost.None);
        Assert.False(refused.IsAcquired);

        await Task.Delay(TimeSpan.FromSeconds(3.5)); // the pause ends: the acquire's script, then the release, run
        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        using PolicyLease next = await policy.AcquireAsync("ann", RequestCost.None);
        Assert.True(next.IsAcquired);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public async Task Acquire_ScriptFailsOnAKeyOfAnotherType_ThrowsAndOtherKeysStillAskRedis(bool hybrid, bool sync)
    {
        // A script error is Redis answering (a key another program wrote, a bug), not an outage: the caller gets it and the
        // breaker stays closed. Taken for an outage, it made this FailOpen limiter admit every key without asking Redis,
        // "good" too, whose one permit another node has used.
        string prefix = "script-" + Guid.NewGuid().ToString("N");
        RedisHybridOptions? blocks = hybrid ? new RedisHybridOptions() : null;
        // A server that stays up: a bound of seconds, so that a stall of this 2-core machine (the stress tests run beside
        // these) cannot pass for an outage, trip the breaker and make the FailOpen limiter admit.
        // Windows on the fake clock (on a whole minute, never moved here): on Redis's clock a minute that ended during the test
        // gave "good" its permit again.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailOpen, prefix: prefix, limit: 1, hybrid: blocks, syncTimeout: TimeSpan.FromSeconds(5), clientClock: _cooldownClock);
        using PartitionedRateLimiter<string> other = Create(RedisFailureMode.FailOpen, prefix: prefix, limit: 1, hybrid: blocks, syncTimeout: TimeSpan.FromSeconds(5), clientClock: _cooldownClock);
        Assert.True((await other.AcquireAsync("good")).IsAcquired);
        Assert.True((await limiter.AcquireAsync("warm")).IsAcquired); // loads the scripts
        RedisKey good = _connection.GetServer(_server.Endpoint).Keys(pattern: prefix + ":{good}:*").Single();
        Assert.True(await _connection.GetDatabase().StringSetAsync(good.ToString().Replace("{good}", "{bad}", StringComparison.Ordinal), "not a hash"));

        if (sync)
        {
            Assert.Throws<InvalidOperationException>(() => limiter.AttemptAcquire("bad"));
        }
        else
        {
            await Assert.ThrowsAsync<InvalidOperationException>(async () => await limiter.AcquireAsync("bad"));
        }

        Assert.Equal(0, Engine(limiter).Failures);
        using RateLimitLease refused = sync ? limiter.AttemptAcquire("good") : await limiter.AcquireAsync("good");
        Assert.False(refused.IsAcquired);
    }

    [Fact]
    public async Task HybridReservationsNobodyWaitsFor_CloseTheBreakerWhenRedisAnswersThem()
    {
        // A busy key's blocks are refilled in the background, so its requests never wait for Redis and never see that it is
        // back: the answers of those refills (and of a reservation that lands after its caller gave up) must close the
        // breaker, or the limiter reads as degraded (health check, the fallback's live node count) while Redis answers.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, limit: 100_000, hybrid: new RedisHybridOptions { MaxBlock = 64, IdleReturn = TimeSpan.FromMinutes(10) });
        var health = (IRedisLimiterHealth)limiter;
        for (int i = 0; i < 200; i++)
        {
            Assert.True((await limiter.AcquireAsync("busy")).IsAcquired);
        }

        _server.Freeze();
        try
        {
            Assert.False(limiter.AttemptAcquire("cold").IsAcquired); // waits 200 ms for a reservation, then trips the breaker
            Assert.True(health.IsDegraded);
        }
        finally
        {
            _server.Thaw();
        }

        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        for (int i = 0; i < 300 && health.IsDegraded; i++)
        {
            Assert.True((await limiter.AcquireAsync("busy")).IsAcquired);
            await Task.Delay(10); // slower than a refill: the block does not run dry, so no request waits for Redis
        }

        Assert.False(health.IsDegraded);
    }

    [Fact]
    public async Task PolicyGetUsage_OnAKeyOfAnotherType_ThrowsAndLeavesTheBreakerClosed()
    {
        // As for acquires: a script error is Redis answering. Taken for an outage, it opened the breaker, and a FailOpen
        // policy would then have admitted every request for a cool-down.
        using RedisRatePolicy<string> policy = Policy("user/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 10), TimeSpan.FromSeconds(2));
        (await policy.AcquireAsync("ann", RequestCost.None)).Dispose();
        RedisKey ann = _connection.GetServer(_server.Endpoint).Keys(pattern: "*ann*").Single();
        Assert.True(await _connection.GetDatabase().StringSetAsync(ann, "not a hash"));

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await policy.GetUsageAsync("ann"));

        var health = (IRedisLimiterHealth)policy;
        Assert.False(health.IsDegraded);
        Assert.Equal(0, health.Failures);
    }

    [Fact]
    public async Task HybridAttemptAcquire_AnswerInTimeButItsContinuationLate_IsAdmittedWithoutTripping()
    {
        // A pool starved by blocked sync callers runs the continuation that installs a reservation's answer late. The client
        // completed its own task in time: the waiting caller installs the answer itself. Waiting for the continuation, it
        // gave up at the bound and tripped the breaker while Redis was well.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, hybrid: new RedisHybridOptions(), syncTimeout: TimeSpan.FromSeconds(5));
        var engine = Engine(limiter);
        var health = (IRedisLimiterHealth)limiter;
        var pool = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        engine.Local!.AnswersReadLate = () => pool.Task;

        using (RateLimitLease lease = limiter.AttemptAcquire("cold"))
        {
            Assert.True(lease.IsAcquired, lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? why) ? why : "no reason");
        }

        Assert.False(health.IsDegraded);
        Assert.Equal(0, engine.Failures);

        // The continuation runs now and finds the answer installed: the block is the one reservation, less the one permit.
        pool.SetResult();
        await Eventually(() => !engine.Local.RefillInFlight("cold") && Volatile.Read(ref engine.Local.Find("cold")!.OnTheWire) is null, "the continuation let go of the reservation");
        Assert.Equal(15, Volatile.Read(ref engine.Local.Find("cold")!.Block.Remaining)); // a first block of 16
        Assert.Equal(1, engine.RoundTrips);
    }

    /// <summary>
    /// What bounds the starved-pool fixes above: a pool starved of every thread, for real, in a process of its own (the
    /// test assembly re-launched, see <see cref="NodeProcess"/>; its threads capped at the processor count and every one
    /// blocked), then one sync acquire on a cold key. StackExchange.Redis 3 reads its socket on the pool, so the client
    /// itself reads no answer (a PING goes unanswered too): nothing in the process can tell that Redis answered, and the
    /// sync caller fails fast by tripping the breaker, which keeps every other caller from blocking a thread for the bound
    /// (the fixes cover a pool that runs the client's reads but the code after them late).
    /// </summary>
    [Theory]
    [InlineData("limiter")]
    [InlineData("policy")]
    public async Task HybridSyncAcquire_PoolStarvedOfEveryThread_TheClientReadsNothingAndTheBreakerTrips(string what)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in new[] { typeof(NodeProcess).Assembly.Location, "starve", _server.Endpoint, "starve-" + Guid.NewGuid().ToString("N"), what })
        {
            start.ArgumentList.Add(argument);
        }

        using Process process = Process.Start(start) ?? throw new InvalidOperationException("The process did not start.");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        string output = await process.StandardOutput.ReadToEndAsync(timeout.Token);
        await process.WaitForExitAsync(timeout.Token);
        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {output} {await process.StandardError.ReadToEndAsync(timeout.Token)}");
        Assert.StartsWith("acquired=False degraded=True pinged=False", output.Trim(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task HybridAttemptAcquire_JoinsARefillNotYetSent_RefusesWithoutTripping()
    {
        // A background refill is claimed on the caller's thread and sent from the pool: on a starved pool it waits there
        // unsent, and a sync caller that joins it waits out its bound. Nothing it saw sent went unanswered, so no trip.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, limit: 16, hybrid: new RedisHybridOptions(), syncTimeout: TimeSpan.FromMilliseconds(300));
        var engine = Engine(limiter);
        var health = (IRedisLimiterHealth)limiter;
        using (RateLimitLease first = await limiter.AcquireAsync("cold", permitCount: 16))
        {
            Assert.True(first.IsAcquired); // the key's first block, all 16 permits of the window, all taken
        }

        await Eventually(() => !engine.Local!.RefillInFlight("cold"), "the background refill found the cap reached");
        RateEngine.Redis.Hybrid.LimiterKey key = engine.Local!.Find("cold")!;
        Assert.Equal(0, Volatile.Read(ref key.Block.Remaining));
        TaskCompletionSource<RateEngine.Redis.Hybrid.LocalBlock> unsent = RateEngine.Redis.Hybrid.LocalReservations<RateEngine.Redis.Hybrid.LimiterKey>.Claim(key, out _)!;
        try
        {
            using RateLimitLease refused = limiter.AttemptAcquire("cold");
            Assert.False(refused.IsAcquired);
            Assert.True(refused.TryGetMetadata(MetadataName.ReasonPhrase, out string? why));
            Assert.StartsWith("No reserved permit was free", why, StringComparison.Ordinal);
            Assert.False(health.IsDegraded);
            Assert.Equal(0, engine.Failures);
        }
        finally
        {
            RateEngine.Redis.Hybrid.LocalReservations<RateEngine.Redis.Hybrid.LimiterKey>.Fail(key, unsent, new InvalidOperationException("never sent"));
        }

        using RateLimitLease next = await limiter.AcquireAsync("cold"); // Redis answers this one: the cap is reached
        Assert.False(next.IsAcquired);
        Assert.True(next.TryGetMetadata(MetadataName.RetryAfter, out _));
        Assert.False(health.IsDegraded);
    }

    [Fact]
    public async Task HybridAttemptAcquire_BackgroundRefillThePoolNeverRuns_IsSentByTheWaitingCaller()
    {
        // A busy key's refill is claimed when its block runs low and sent from the pool. On a starved pool it waits there
        // unsent, and every sync caller that ran the block dry waited out its bound and was refused while Redis was well.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, limit: 1_000, hybrid: new RedisHybridOptions(), syncTimeout: TimeSpan.FromSeconds(5));
        var engine = Engine(limiter);
        var health = (IRedisLimiterHealth)limiter;
        engine.Local!.HoldBackgroundSends = true;
        for (int i = 0; i < 16; i++)
        {
            using RateLimitLease lease = await limiter.AcquireAsync("busy"); // the first block, 16; under half left claims a refill
            Assert.True(lease.IsAcquired);
        }

        Assert.True(engine.Local.RefillInFlight("busy"));
        Assert.Equal(1, engine.RoundTrips); // claimed, not sent

        var started = Stopwatch.StartNew();
        using (RateLimitLease joined = limiter.AttemptAcquire("busy"))
        {
            Assert.True(joined.IsAcquired, joined.TryGetMetadata(MetadataName.ReasonPhrase, out string? why) ? why : "no reason");
        }

        Assert.True(started.Elapsed < TimeSpan.FromSeconds(4), $"waited {started.Elapsed} for a refill it could send");
        Assert.Equal(2, engine.RoundTrips);
        Assert.False(health.IsDegraded);
    }

    [Fact]
    public async Task HybridPolicyAcquire_JoinsAReservationRedisLeavesUnanswered_TripsTheBreaker()
    {
        // The request sent nothing itself: it joined another request's reservation, on the wire before it began to wait
        // and unanswered for the whole bound. That is an outage (a trace of its own calls alone would be empty).
        using RedisRatePolicy<string> policy = Policy("user/hour", PolicyRule.FixedWindow(TimeSpan.FromHours(1), 100), TimeSpan.FromMilliseconds(300), hybrid: true);
        var health = (IRedisLimiterHealth)policy;
        (await policy.AcquireAsync("warm", RequestCost.None)).Dispose(); // the scripts are loaded

        _server.Freeze();
        ValueTask<PolicyLease> first;
        try
        {
            first = policy.AcquireAsync("cold", RequestCost.None); // sends the key's reservation, waits without a bound
            Assert.False(first.IsCompleted);
            using PolicyLease joined = policy.Acquire("cold", RequestCost.None);
            Assert.False(joined.IsAcquired);
            Assert.True(health.IsDegraded);
        }
        finally
        {
            _server.Thaw();
        }

        (await first).Dispose();
    }

    [Fact]
    public async Task HybridPolicyAcquire_JoinsABackgroundRefillRedisLeavesUnanswered_TripsTheBreaker()
    {
        // A background refill (a debt's, an idle key's) is one call of its own, not a batch: it is published on its key too,
        // so a request that joins it while Redis is away traces it and trips, rather than refusing alone as a busy node.
        using RedisRatePolicy<string> policy = Policy("tokens/hour", PolicyRule.FixedWindow(TimeSpan.FromHours(1), 1_000_000).Counting(PolicyMeter.Tokens), TimeSpan.FromMilliseconds(300), hybrid: true);
        var health = (IRedisLimiterHealth)policy;
        (await policy.AcquireAsync("cold", new RequestCost(10, 0))).Dispose(); // the key and its first block
        var blocks = policy.BlockLayer(0).Blocks!;
        RateEngine.Redis.Policies.LayerKey key = blocks.Find("cold")!;

        _server.Freeze();
        try
        {
            Task<RateEngine.Redis.Hybrid.LocalBlock> background = blocks.StartRefill(key, need: 0);
            await Eventually(() => Volatile.Read(ref key.OnTheWire) is RateEngine.Redis.Hybrid.LocalReservations<RateEngine.Redis.Policies.LayerKey>.Ticket { Answer: not null }, "the pool sent the background refill");
            using PolicyLease joined = policy.Acquire("cold", new RequestCost(1_000, 0)); // more than the block holds: joins it
            Assert.False(joined.IsAcquired);
            Assert.True(health.IsDegraded);
            RedisTasks.Observe(background);
        }
        finally
        {
            _server.Thaw();
        }
    }

    [Fact]
    public async Task HybridPolicyAcquire_PrefetchThePoolNeverRuns_IsSentByTheRequestThatJoinsIt()
    {
        // A request that leaves a block below half claims its refill and queues it on the pool. On a starved pool it waits
        // there unsent, and every sync request that ran the block dry was refused as a busy node.
        using RedisRatePolicy<string> policy = Policy("user/hour", PolicyRule.FixedWindow(TimeSpan.FromHours(1), 1_000), TimeSpan.FromSeconds(5), hybrid: true);
        var health = (IRedisLimiterHealth)policy;
        policy.HoldPrefetches = true;
        for (int i = 0; i < 16; i++)
        {
            using PolicyLease lease = await policy.AcquireAsync("busy", RequestCost.None); // the first block, 16: a prefetch is claimed on the way
            Assert.True(lease.IsAcquired);
        }

        Assert.True(policy.BlockLayer(0).Blocks!.RefillInFlight("busy"));
        long calls = policy.RoundTrips;

        var started = Stopwatch.StartNew();
        using (PolicyLease joined = policy.Acquire("busy", RequestCost.None))
        {
            Assert.True(joined.IsAcquired, joined.Reason);
        }

        Assert.True(started.Elapsed < TimeSpan.FromSeconds(4), $"waited {started.Elapsed} for a prefetch it could send");
        Assert.Equal(calls + 1, policy.RoundTrips);
        Assert.False(health.IsDegraded);
    }

    [Fact]
    public async Task HybridPolicyAcquire_AnswerInTimeButItsContinuationLate_RefusesTheRequestWithoutTripping()
    {
        // As for the limiter (above), but the policy's sync acquire waits for its async one, which goes on after each answer
        // on the pool: the request that ran out of its bound is refused alone, since Redis answered every call it sent.
        using RedisRatePolicy<string> policy = Policy("user/hour", PolicyRule.FixedWindow(TimeSpan.FromHours(1), 100), TimeSpan.FromMilliseconds(500), hybrid: true);
        var health = (IRedisLimiterHealth)policy;
        var pool = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        policy.AnswersReadLate = () => pool.Task;

        using (PolicyLease refused = policy.Acquire("cold", RequestCost.None))
        {
            Assert.False(refused.IsAcquired);
            Assert.Contains("thread pool is busy", refused.Reason, StringComparison.Ordinal);
        }

        Assert.False(health.IsDegraded);
        Assert.Equal(0, health.Failures);

        pool.SetResult();
        policy.AnswersReadLate = null;
        using PolicyLease next = await policy.AcquireAsync("cold", RequestCost.None);
        Assert.True(next.IsAcquired);
        Assert.False(health.IsDegraded);
    }

    [Fact]
    public async Task HybridReservationAnsweredAfterItsCallerGaveUp_LeavesTheBreakerOpen()
    {
        // Redis slower than the sync bound: the caller gives up and trips the breaker. The late answer to that call says
        // nothing the trip did not know; closing on it would send every next caller to wait out the bound again.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, hybrid: new RedisHybridOptions());
        var engine = Engine(limiter);
        var health = (IRedisLimiterHealth)limiter;
        Assert.True((await limiter.AcquireAsync("warm")).IsAcquired); // the scripts are loaded

        _server.Freeze();
        ValueTask<RateLimitLease> waiting;
        try
        {
            waiting = limiter.AcquireAsync("cold"); // sends the reservation and waits for it, without a bound
            Assert.False(waiting.IsCompleted);
            Assert.False(limiter.AttemptAcquire("cold").IsAcquired); // joins it, gives up after 200 ms, trips the breaker
        }
        finally
        {
            _server.Thaw();
        }

        // The answer lands; the async caller that waited for it gets its permit, but neither it nor the reservation closes
        // the breaker: the call was sent before the trip.
        using (RateLimitLease late = await waiting)
        {
            Assert.True(late.IsAcquired);
        }

        Assert.True(health.IsDegraded);
        Assert.Equal(1, engine.Failures);
        using RateLimitLease answered = limiter.AttemptAcquire("other"); // within the cool-down: no call, no wait
        Assert.False(answered.IsAcquired);
        Assert.Equal(1, engine.Failures);
    }

    [Fact]
    public async Task HybridHalfOpenProbe_JoiningAReservationSentBeforeTheTrip_IsGivenBackWhenItLands()
    {
        // A reservation sent before a trip is still on the wire when the cool-down ends. The caller that takes the half-open
        // probe joins it rather than sending one, and its answer closes nothing (it was sent before the trip). A probe kept
        // by that caller made every other caller wait out another cool-down while Redis answered.
        // Windows on the fake clock too (it starts on a whole minute): moving it past the cool-down must not end the block's
        // window, as it would on Redis's clock in the last seconds of a minute.
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, hybrid: new RedisHybridOptions(), clientClock: _cooldownClock);
        var health = (IRedisLimiterHealth)limiter;
        Assert.True((await limiter.AcquireAsync("warm")).IsAcquired); // the scripts are loaded

        _server.Freeze();
        ValueTask<RateLimitLease> sentBeforeTheTrip;
        ValueTask<RateLimitLease> prober;
        try
        {
            sentBeforeTheTrip = limiter.AcquireAsync("cold"); // sends the key's reservation, and waits for it without a bound
            Assert.False(limiter.AttemptAcquire("other").IsAcquired); // waits out the sync bound, trips the breaker
            Assert.True(health.IsDegraded);
            _cooldownClock.Advance(TimeSpan.FromSeconds(2)); // the cool-down is over: the next caller probes
            prober = limiter.AcquireAsync("cold"); // takes the probe and joins the reservation on the wire
            Assert.False(prober.IsCompleted);
        }
        finally
        {
            _server.Thaw();
        }

        using (RateLimitLease first = await sentBeforeTheTrip)
        using (RateLimitLease joined = await prober)
        {
            Assert.True(first.IsAcquired);
            Assert.True(joined.IsAcquired);
        }

        Assert.True(health.IsDegraded); // nothing sent since the trip has been answered yet
        // The probe is free: a new key's caller asks Redis now (async: no sync bound for a loaded machine to pass and trip).
        using RateLimitLease probed = await limiter.AcquireAsync("third");
        Assert.True(probed.IsAcquired);
        Assert.False(health.IsDegraded);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ScriptErrorAnsweredAfterAnotherCallTripped_LeavesTheBreakerOpen(bool hybrid)
    {
        // A script error is an answer, and closes the breaker as one does: not when it answers a call sent before a trip
        // (Redis slower than the sync bound meanwhile). Closing on it sent every next caller to wait out the bound again.
        string prefix = "late-script-" + Guid.NewGuid().ToString("N");
        using PartitionedRateLimiter<string> limiter = Create(RedisFailureMode.FailClosed, prefix: prefix, hybrid: hybrid ? new RedisHybridOptions() : null);
        var health = (IRedisLimiterHealth)limiter;
        Assert.True((await limiter.AcquireAsync("good")).IsAcquired); // the scripts are loaded
        RedisKey good = _connection.GetServer(_server.Endpoint).Keys(pattern: prefix + ":{good}:*").Single();
        Assert.True(await _connection.GetDatabase().StringSetAsync(good.ToString().Replace("{good}", "{bad}", StringComparison.Ordinal), "not a hash"));

        _server.Freeze();
        ValueTask<RateLimitLease> bad;
        try
        {
            bad = limiter.AcquireAsync("bad"); // sent, and waited for without a bound
            Assert.False(bad.IsCompleted);
            Assert.False(limiter.AttemptAcquire("cold").IsAcquired); // gives up after 200 ms and trips the breaker
        }
        finally
        {
            _server.Thaw();
        }

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await bad);
        Assert.True(health.IsDegraded);
        Assert.Equal(1, health.Failures);
    }

    [Fact]
    public async Task PolicyAcquireGivenUp_ItsRollbackDuringTheCooldown_LeavesTheBreakerOpen()
    {
        // Redis slower than the sync bound: the acquire gives up and trips the breaker; its script still runs and admits, so
        // its slot is rolled back by a settle sent during the cool-down. That settle's answer must not end the cool-down
        // (every next sync caller would wait out the bound again); the late answer itself closes nothing either.
        using RedisRatePolicy<string> policy = Policy("streams", PolicyRule.Concurrency(1), TimeSpan.FromMilliseconds(200));
        (await policy.AcquireAsync("ann", RequestCost.None)).Dispose(); // the scripts are loaded
        var health = (IRedisLimiterHealth)policy;

        _server.Freeze();
        try
        {
            using PolicyLease refused = policy.Acquire("ann", RequestCost.None);
            Assert.False(refused.IsAcquired);
        }
        finally
        {
            _server.Thaw();
        }

        // The late admission lands and is rolled back within milliseconds of the thaw; for the next two seconds of real time
        // (the cool-down runs on the test's fake clock, which stands still) the breaker stays open.
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(2))
        {
            Assert.True(health.IsDegraded, $"closed {watch.ElapsedMilliseconds} ms after the thaw, within the cool-down");
            await Task.Delay(TimeSpan.FromMilliseconds(20), TimeProvider.System);
        }

        Assert.Equal(1, health.Failures);
    }

    [Fact]
    public async Task HybridPolicy_PauseChecksFailingInTheBackground_DoNotTripTheBreaker()
    {
        // A background call's failure never trips the breaker (a late one, after a request's probe closed it on Redis's
        // return, would open it again for a whole cool-down). Blocks keep serving meanwhile, as they may until their periods end.
        using RedisRatePolicy<string> policy = GlobalPolicy("pausecheck-" + Guid.NewGuid().ToString("N"), new RedisHybridOptions { PauseCheckInterval = TimeSpan.FromSeconds(1), IdleReturn = TimeSpan.FromHours(1) });
        var health = (IRedisLimiterHealth)policy;
        Assert.True((await policy.AcquireAsync("ann", RequestCost.None)).IsAcquired);
        _server.Kill();

        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(5)) // the client's timeout is 2 s: the first checks sent have failed by then
        {
            _cooldownClock.Advance(TimeSpan.FromSeconds(1)); // a pause check, on the policy's clock
            await Task.Delay(TimeSpan.FromMilliseconds(100), TimeProvider.System);
            Assert.False(health.IsDegraded, $"tripped {watch.ElapsedMilliseconds} ms after the server died, by a pause check alone");
        }

        Assert.Equal(0, health.Failures);
        _server.Start();
    }

    [Fact]
    public async Task HybridPolicy_PausedWhenRedisDies_ARequestsReadOfTheSwitchTripsTheBreaker()
    {
        // A paused node reads the switch on each request: that read is the request's own call, so its failure trips the
        // breaker, and the next paused requests answer from the last known pause instead of each waiting out the timeout.
        using RedisRatePolicy<string> policy = GlobalPolicy("paused-" + Guid.NewGuid().ToString("N"), new RedisHybridOptions { PauseCheckInterval = TimeSpan.FromHours(1), IdleReturn = TimeSpan.FromHours(1) });
        var health = (IRedisLimiterHealth)policy;
        policy.Pause("maintenance");
        _server.Kill();

        using PolicyLease first = await policy.AcquireAsync("ann", RequestCost.None);
        Assert.False(first.IsAcquired);
        Assert.True(health.IsDegraded);
        using PolicyLease second = await policy.AcquireAsync("ann", RequestCost.None);
        Assert.Equal("pause", second.BlockingLayer);
        Assert.Equal(1, health.Failures); // the second read was not sent

        // Back (a new server, without the switch): after the cool-down a paused request's read is the probe, and Redis's
        // answer closes the breaker (and says the pause is off).
        _server.Start();
        var watch = Stopwatch.StartNew();
        while (policy.IsPaused && watch.Elapsed < TimeSpan.FromSeconds(10))
        {
            _cooldownClock.Advance(TimeSpan.FromSeconds(1));
            (await policy.AcquireAsync("ann", RequestCost.None)).Dispose();
            await Task.Delay(TimeSpan.FromMilliseconds(50), TimeProvider.System);
        }

        Assert.False(policy.IsPaused, "a paused node's reads of the switch never reached Redis after it came back");
        Assert.False(health.IsDegraded, "the read that saw Redis back did not close the breaker");
    }

    [Fact]
    public async Task HybridPoliciesCombined_AnOutageTripsTheJoinedPolicysBreakerToo()
    {
        // A combination decides the layers of the policies it joined, whose blocks ask their own breakers (prefetches, idle
        // returns, dispose). Tripped only on the combination, the joined policy's blocks went on calling the dead server
        // through its cool-down, and a late answer to one of them ended the cool-down early (found by review).
        string prefix = "combined-" + Guid.NewGuid().ToString("N");
        using RedisRatePolicy<string> global = GlobalPolicy(prefix, new RedisHybridOptions { IdleReturn = TimeSpan.FromMilliseconds(500) });
        using RedisRatePolicy<string> endpoint = EndpointPolicy(prefix, new RedisHybridOptions { IdleReturn = TimeSpan.FromMilliseconds(500) });
        IRatePolicy<string> both = global.Combine([endpoint]);
        using (PolicyLease first = await both.AcquireAsync("ann", RequestCost.None))
        {
            Assert.True(first.IsAcquired); // blocks on both layers
        }

        _server.Kill();
        using (PolicyLease refused = await both.AcquireAsync("bob", RequestCost.None))
        {
            Assert.False(refused.IsAcquired); // bob's user block needs Redis: the call fails and trips the breakers
        }

        Assert.True(((IRedisLimiterHealth)endpoint).IsDegraded);
        long calls = endpoint.RoundTrips;
        _cooldownClock.Advance(TimeSpan.FromMilliseconds(600)); // the endpoint's idle sweep, within the cool-down
        Assert.Equal(calls, endpoint.RoundTrips);
    }

    [Fact]
    public async Task PoliciesCombinedTwice_AnOutageTripsEveryJoinedPolicysBreaker()
    {
        // ASP.NET Core combines a global policy that is itself a combination with each endpoint's: (a + b) + c decides b's
        // layers too, so an outage it meets must trip b's breaker, not only a's and c's (b's blocks ask b's breaker).
        string prefix = "combined-twice-" + Guid.NewGuid().ToString("N");
        RedisLimiterOptions Options() => Combinable(prefix);
        RedisRatePolicy<string> Policy(string layer) => new RedisRatePolicyBuilder<string>(Options())
            .AddLayer(layer, user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100_000))
            .Build();
        using RedisRatePolicy<string> a = Policy("a/min");
        using RedisRatePolicy<string> b = Policy("b/min");
        using RedisRatePolicy<string> c = Policy("c/min");
        IRatePolicy<string> all = ((RedisRatePolicy<string>)a.Combine([b])).Combine([c]);
        (await all.AcquireAsync("ann", RequestCost.None)).Dispose();

        _server.Kill();
        using (PolicyLease refused = await all.AcquireAsync("ann", RequestCost.None))
        {
            Assert.False(refused.IsAcquired);
        }

        Assert.All(new[] { a, b, c }, policy => Assert.True(((IRedisLimiterHealth)policy).IsDegraded));
    }

    [Fact]
    public async Task PoliciesCombined_ALateAnswerToTheCombination_LeavesAJoinedPolicyTrippedSinceOpen()
    {
        // The combination's call is sent; then a call of the joined endpoint policy gives up (Redis slower than the sync
        // bound) and trips its breaker. The combination's late answer says nothing that trip did not know: closing the
        // endpoint's breaker on it sent the endpoint's next callers to wait out the bound again.
        string prefix = "combined-late-" + Guid.NewGuid().ToString("N");
        using RedisRatePolicy<string> global = GlobalPolicy(prefix);
        using RedisRatePolicy<string> endpoint = EndpointPolicy(prefix);
        IRatePolicy<string> both = global.Combine([endpoint]);
        (await both.AcquireAsync("ann", RequestCost.None)).Dispose(); // the scripts are loaded
        (await endpoint.AcquireAsync("ann", RequestCost.None)).Dispose();

        _server.Freeze();
        ValueTask<PolicyLease> late;
        try
        {
            late = both.AcquireAsync("ann", RequestCost.None); // sent, and waited for without a bound
            Assert.False(late.IsCompleted);
            using PolicyLease refused = endpoint.Acquire("bob", RequestCost.None); // gives up after 200 ms: trips the endpoint
            Assert.False(refused.IsAcquired);
        }
        finally
        {
            _server.Thaw();
        }

        using (PolicyLease admitted = await late)
        {
            Assert.True(admitted.IsAcquired);
        }

        Assert.True(((IRedisLimiterHealth)endpoint).IsDegraded);
        Assert.Equal(1, ((IRedisLimiterHealth)endpoint).Failures);
    }

    [Fact]
    public async Task HybridPolicy_ReservationsNobodyWaitsFor_CloseTheBreakerWhenRedisAnswersThem()
    {
        // As for the limiter (above): a busy user's blocks refill in the background, and the pause check reads Redis every
        // half second; their answers must close the breaker that a request on a cold user tripped.
        using RedisRatePolicy<string> policy = new RedisRatePolicyBuilder<string>(new RedisLimiterOptions
        {
            Connection = _connection,
            KeyPrefix = "policy-" + Guid.NewGuid().ToString("N"),
            SyncTimeout = TimeSpan.FromMilliseconds(200),
            FailureCooldown = TimeSpan.FromSeconds(1),
            TimeProvider = _cooldownClock,
            Hybrid = new RedisHybridOptions { MaxBlock = 64, IdleReturn = TimeSpan.FromMinutes(10) },
        })
            .AddLayer("user/hour", user => user, PolicyRule.FixedWindow(TimeSpan.FromHours(1), 100_000))
            .Build();
        var health = (IRedisLimiterHealth)policy;
        for (int i = 0; i < 200; i++)
        {
            using PolicyLease lease = await policy.AcquireAsync("busy", RequestCost.None);
            Assert.True(lease.IsAcquired);
        }

        _server.Freeze();
        try
        {
            using PolicyLease refused = policy.Acquire("cold", RequestCost.None); // waits 200 ms for a block, then trips
            Assert.False(refused.IsAcquired);
            Assert.True(health.IsDegraded);
        }
        finally
        {
            _server.Thaw();
        }

        _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        for (int i = 0; i < 300 && health.IsDegraded; i++)
        {
            using PolicyLease lease = await policy.AcquireAsync("busy", RequestCost.None);
            Assert.True(lease.IsAcquired);
            await Task.Delay(10);
        }

        Assert.False(health.IsDegraded);
    }

    [Fact]
    public async Task HybridWhileRedisIsAway_TheIdleSweepAndDisposeAsyncSendNothing_AndNeitherThrowsNorWaits()
    {
        // With the breaker open, idle keys are forgotten (keys must not pile up over an outage) but their leftovers are not
        // sent into it, and a dispose gives up the returns at once: it must not wait out the client's timeout, nor throw.
        PartitionedRateLimiter<string> limiter = Create(
            RedisFailureMode.FailClosed, hybrid: new RedisHybridOptions { IdleReturn = TimeSpan.FromMilliseconds(500) });
        var engine = Engine(limiter);
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired); // a block of 16: 15 to give back
        Assert.True((await limiter.AcquireAsync("carl")).IsAcquired);

        _server.Kill();
        Assert.False(limiter.AttemptAcquire("bob").IsAcquired); // the breaker opens for its 1 s cool-down
        long calls = engine.RoundTrips;
        _cooldownClock.Advance(TimeSpan.FromMilliseconds(600)); // a sweep within the cool-down: every key idle
        Assert.Null(engine.Local!.Find("ann")); // forgotten ("bob" may still wait on its reservation)
        Assert.Null(engine.Local.Find("carl"));
        Assert.Equal(calls, engine.RoundTrips);

        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired); // answered by the open breaker, a key again
        ValueTask disposing = limiter.DisposeAsync();
        Assert.True(disposing.IsCompleted, "DisposeAsync waited for Redis");
        await disposing;
        Assert.Equal(calls, engine.RoundTrips);
    }

    [Fact]
    public void HealthCheck_LimiterNotMadeByRedisLimiter_Throws()
    {
        using PartitionedRateLimiter<string> local = PartitionedRateLimiter.Create<string, string>(key => RateLimitPartition.GetNoLimiter(key));
        Assert.Throws<ArgumentException>(() => RedisLimiter.HealthCheck(local));
        Assert.Throws<ArgumentNullException>(() => RedisLimiter.HealthCheck((PartitionedRateLimiter<string>)null!));
        Assert.Throws<ArgumentNullException>(() => RedisLimiter.HealthCheck((RedisRatePolicy<string>)null!));
    }

    /// <summary>
    /// Acquires until the limiter has recovered. An attempt made before the connection is back trips the breaker again, and
    /// its cool-down runs on the fake clock: each retry moves that past it, or one early attempt would keep it open for good.
    /// </summary>
    private async Task<bool> EventuallyAcquired(PartitionedRateLimiter<string> limiter, string key)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(15))
        {
            if ((await limiter.AcquireAsync(key)).IsAcquired)
            {
                return true;
            }

            await Task.Delay(100);
            _cooldownClock.Advance(TimeSpan.FromSeconds(2));
        }

        return false;
    }

    /// <summary>
    /// Three nodes that counted each other (Expiry 1 s): the first on a clock of its own, the other two on one the test then
    /// leaves still, so they stop beating. The third leaves, and the first hears the count drop to 2: a window of lower
    /// answers begins. The caller disposes the nodes and connections.
    /// </summary>
    private async Task<(string Prefix, PartitionedRateLimiter<string>[] Nodes, ConnectionMultiplexer[] Connections, FakeTimeProvider First)> ThreeNodesAfterTheThirdLeft()
    {
        string prefix = "live-" + Guid.NewGuid().ToString("N");
        ConnectionMultiplexer[] connections = [.. Enumerable.Range(0, 3).Select(_ => _server.Connect())];
        var first = new FakeTimeProvider();
        var others = new FakeTimeProvider();
        PartitionedRateLimiter<string>[] nodes =
        [
            LiveNodes(connections[0], prefix, first, expiry: TimeSpan.FromSeconds(1)),
            LiveNodes(connections[1], prefix, others, expiry: TimeSpan.FromSeconds(1)),
            LiveNodes(connections[2], prefix, others, expiry: TimeSpan.FromSeconds(1)),
        ];
        try
        {
            await Eventually(
                () =>
                {
                    first.Advance(TimeSpan.FromMilliseconds(200));
                    return nodes.All(node => Engine(node).FallbackNodes == 3);
                },
                "every node counts three live nodes",
                others);
            nodes[2].Dispose();
            await Eventually(() => _connection.GetDatabase().SortedSetLength(prefix + ":nodes") == 2, "the third node left");
            first.Advance(TimeSpan.FromMilliseconds(200));
            await Task.Delay(200);
            return (prefix, nodes, connections, first);
        }
        catch
        {
            Dispose(nodes, connections);
            throw;
        }
    }

    private static RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions> Engine(PartitionedRateLimiter<string> limiter) =>
        (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;

    /// <summary>A node whose LocalFallback share is derived from the live node count (heartbeats every 200 ms of <paramref name="clock"/>).</summary>
    private static PartitionedRateLimiter<string> LiveNodes(ConnectionMultiplexer connection, string prefix, TimeProvider clock, TimeSpan? expiry = null, int minimum = 1, TimeProvider? clientClock = null) =>
        RedisLimiter.CreateFixedWindow<string>(
            user => user,
            _ => new FixedWindowRateLimiterOptions { PermitLimit = 100, Window = TimeSpan.FromMinutes(1) },
            new RedisLimiterOptions
            {
                Connection = connection,
                KeyPrefix = prefix,
                SyncTimeout = TimeSpan.FromMilliseconds(200),
                FailureMode = RedisFailureMode.LocalFallback,
                LocalFallbackLiveNodes = new RedisLiveNodeOptions
                {
                    HeartbeatInterval = TimeSpan.FromMilliseconds(200),
                    Expiry = expiry ?? TimeSpan.FromSeconds(30),
                    MinimumNodeCount = minimum,
                },
                TimeProvider = clock,
                ClientClock = clientClock,
            });

    /// <summary>Waits for <paramref name="condition"/>, moving <paramref name="heartbeats"/> a heartbeat at a time if given.</summary>
    private static async Task Eventually(Func<bool> condition, string what, FakeTimeProvider? heartbeats = null)
    {
        var clock = Stopwatch.StartNew();
        while (!condition() && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            heartbeats?.Advance(TimeSpan.FromMilliseconds(200));
            await Task.Delay(20);
        }

        Assert.True(condition(), $"not within 10 s: {what}");
    }

    private static void Dispose(IEnumerable<PartitionedRateLimiter<string>> nodes, ConnectionMultiplexer[] connections)
    {
        foreach (PartitionedRateLimiter<string> node in nodes)
        {
            node.Dispose();
        }

        foreach (ConnectionMultiplexer connection in connections)
        {
            connection.Dispose();
        }
    }

    private static IEnumerable<CollectedMeasurement<long>> Mine(IEnumerable<CollectedMeasurement<long>> measurements, string prefix) =>
        measurements.Where(m => m.Tags.TryGetValue("rateengine.limiter", out object? limiter) && (string?)limiter == prefix);

    /// <summary>A one-layer policy keyed by user, failing closed, its breaker's cool-down on the test's fake clock.</summary>
    /// <summary>A global per-minute cap, to combine with <see cref="EndpointPolicy"/> of the same prefix.</summary>
    private RedisRatePolicy<string> GlobalPolicy(string prefix, RedisHybridOptions? hybrid = null) => new RedisRatePolicyBuilder<string>(Combinable(prefix, hybrid))
        .AddGlobalLayer("global/min", PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100_000))
        .Build();

    /// <summary>A per-user per-minute cap, to combine with <see cref="GlobalPolicy"/> of the same prefix.</summary>
    private RedisRatePolicy<string> EndpointPolicy(string prefix, RedisHybridOptions? hybrid = null) => new RedisRatePolicyBuilder<string>(Combinable(prefix, hybrid))
        .AddLayer("user/min", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 100_000))
        .Build();

    /// <summary>Options of policies that combine (one connection and key prefix), with a 200 ms sync bound and the fake cool-down clock.</summary>
    private RedisLimiterOptions Combinable(string prefix, RedisHybridOptions? hybrid = null) => new()
    {
        Connection = _connection,
        KeyPrefix = prefix,
        SyncTimeout = TimeSpan.FromMilliseconds(200),
        FailureCooldown = TimeSpan.FromSeconds(1),
        TimeProvider = _cooldownClock,
        Hybrid = hybrid,
    };

    private RedisRatePolicy<string> Policy(string layer, PolicyRule rule, TimeSpan syncTimeout, bool hybrid = false) => new RedisRatePolicyBuilder<string>(new RedisLimiterOptions
    {
        Connection = _connection,
        KeyPrefix = "policy-" + Guid.NewGuid().ToString("N"),
        SyncTimeout = syncTimeout,
        FailureCooldown = TimeSpan.FromSeconds(1),
        TimeProvider = _cooldownClock,
        Hybrid = hybrid ? new RedisHybridOptions { IdleReturn = TimeSpan.FromHours(1) } : null,
    })
        .AddLayer(layer, user => user, rule)
        .Build();

    private PartitionedRateLimiter<string> Create(
        RedisFailureMode mode, double share = 0, string? prefix = null, ILoggerFactory? logs = null, int limit = 100, RedisHybridOptions? hybrid = null, TimeSpan? syncTimeout = null, TimeProvider? clientClock = null) => RedisLimiter.CreateFixedWindow<string>(
        user => user,
        _ => new FixedWindowRateLimiterOptions { PermitLimit = limit, Window = TimeSpan.FromMinutes(1) },
        new RedisLimiterOptions
        {
            Hybrid = hybrid,
            Connection = _connection,
            KeyPrefix = prefix ?? "failure-" + Guid.NewGuid().ToString("N"),
            LoggerFactory = logs,
            SyncTimeout = syncTimeout ?? TimeSpan.FromMilliseconds(200),
            FailureMode = mode,
            LocalFallbackShare = share,
            FailureCooldown = TimeSpan.FromSeconds(1),
            TimeProvider = _cooldownClock,
            ClientClock = clientClock,
        });
}

/// <summary>An <see cref="ILoggerFactory"/> that hands out one logger (the test's <see cref="FakeLogger"/>).</summary>
internal sealed class SingleLoggerFactory(ILogger logger) : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName) => logger;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }
}
