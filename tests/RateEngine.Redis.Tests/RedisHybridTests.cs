using System.Collections.Concurrent;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Redis.Tests.Support;
using RateEngine.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>The hybrid mode: local blocks reserved from Redis, on one fake clock shared by the nodes and the decisions.</summary>
[Collection(RedisCollection.Name)]
public sealed class RedisHybridTests : IDisposable
{
    private readonly Xunit.Abstractions.ITestOutputHelper _output;

    private static readonly DateTimeOffset Start = new(2026, 12, 2, 12, 0, 0, TimeSpan.Zero);

    private readonly RedisServer _server;
    private readonly ConnectionMultiplexer _connection;
    private readonly FakeTimeProvider _time = new(Start);
    private readonly string _prefix = "hybrid-" + Guid.NewGuid().ToString("N");

    public RedisHybridTests(RedisServer server, Xunit.Abstractions.ITestOutputHelper output)
    {
        _output = output;
        _server = server;
        _connection = server.Connect();
    }

    public void Dispose() => _connection.Dispose();

    [Fact]
    public async Task AcquireAsync_OneBusyKey_TakesFarFewerRoundTripsThanAcquires()
    {
        await using PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 10_000);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        for (int i = 0; i < 1_000; i++)
        {
            Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        }

        Assert.InRange(engine.RoundTrips, 1, 40); // blocks double to 64: about 1,000 / 64 + 7 reservations
        Assert.InRange(await Counted("ann"), 1_000, 1_000 + 64);
    }

    [Fact]
    public async Task AcquireAsync_ABusyKeyRefilledAtMaxBlock_HoldsMaxBlockAgain()
    {
        await using PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 1_000, maxBlock: 16);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;

        // The first block is 16 (MaxBlock); the ninth take leaves 7, under half, and starts a background refill.
        for (int i = 0; i < 9; i++)
        {
            Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        }

        await Eventually(() => Task.FromResult(!engine.Local!.RefillInFlight("ann")));

        // The 7 left join the new block: it asks for 9, so the node holds MaxBlock again (it asked for 2 and held 9, the
        // leftover taken off twice, so busy keys settled at about half of MaxBlock per round trip).
        Assert.Equal(16, Volatile.Read(ref engine.Local!.Find("ann")!.Block.Remaining));
        Assert.Equal(16 + 9, await Counted("ann"));
    }

    [Fact]
    public async Task AcquireAsync_NearTheCap_AdmitsExactlyTheLimitAndRefusesLocallyAfterIt()
    {
        await using PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 100);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        int admitted = 0;
        for (int i = 0; i < 150; i++)
        {
            admitted += (await limiter.AcquireAsync("ann")).IsAcquired ? 1 : 0;
        }

        Assert.Equal(100, admitted);
        long trips = engine.RoundTrips;
        using RateLimitLease refused = limiter.AttemptAcquire("ann");
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromMinutes(1), retryAfter); // the window started with the fake clock
        Assert.Equal(trips, engine.RoundTrips); // refused from the cached refusal, no round trip

        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Acquire_TheLastReservationAllowed_IsTriedBeforeGivingUpAsContended(bool sync)
    {
        // One reservation allowed: a new key's request waits for it, then must take from the block it made. A loop that
        // tried the block only before each reservation gave up as contended with the permits in hand.
        await using PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 10);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        engine.LocalAttempts = 1;
        using RateLimitLease lease = sync ? limiter.AttemptAcquire("ann") : await limiter.AcquireAsync("ann");
        Assert.True(lease.IsAcquired, lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? why) ? why : "refused");
        Assert.Equal(1, engine.RoundTrips);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Probe_WhileThisNodesBlockHoldsPermits_IsAdmittedThoughRedisCountsTheCap(bool sync)
    {
        // Redis counts a block's permits as used. Once another node has taken the rest of the cap, Redis's count is at the
        // limit, yet this node's next request is admitted from its block: a zero-permit probe must say so, not refuse.
        await using PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 8);
        await using PartitionedRateLimiter<string> other = FixedWindow(_connection, limit: 8);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        long held = Volatile.Read(ref engine.Local!.Find("ann")!.Block.Remaining);
        Assert.True(held > 0, "the first reservation kept nothing for later");
        while ((await other.AcquireAsync("ann")).IsAcquired)
        {
        }

        Assert.Equal(8, await Counted("ann"));
        using RateLimitLease probe = sync ? limiter.AttemptAcquire("ann", 0) : await limiter.AcquireAsync("ann", 0);
        Assert.True(probe.IsAcquired);
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        using RateLimitLease otherProbe = await other.AcquireAsync("ann", 0); // that node holds nothing: Redis says full
        Assert.False(otherProbe.IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_RequestsLargerThanABlock_AreAdmittedAndARefusalOnlyAnswersAsLargeOnes()
    {
        await using PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 100, maxBlock: 8);
        Assert.True((await limiter.AcquireAsync("ann", 90)).IsAcquired); // more than MaxBlock: reserved whole
        Assert.False((await limiter.AcquireAsync("ann", 20)).IsAcquired); // 10 left
        int small = 0;
        for (int i = 0; i < 15; i++)
        {
            small += (await limiter.AcquireAsync("ann", 1)).IsAcquired ? 1 : 0;
        }

        Assert.Equal(10, small); // the refusal of 20 did not shut out the 10 single permits left
    }

    [Fact]
    public async Task AcquireAsync_ANodeWhoseClockIsBehind_NeverResetsTheLaterWindowsCount()
    {
        var behind = new FakeTimeProvider(Start - TimeSpan.FromSeconds(1));
        await using PartitionedRateLimiter<string> ahead = FixedWindow(_connection, limit: 10);
        await using PartitionedRateLimiter<string> late = RedisLimiter.CreateFixedWindow<string>(
            key => key,
            _ => new FixedWindowRateLimiterOptions { PermitLimit = 10, Window = TimeSpan.FromMinutes(1) },
            Options(_connection).With(o => { o.ClientClock = behind; o.TimeProvider = behind; }));
        Assert.True((await ahead.AcquireAsync("ann", 10)).IsAcquired);
        Assert.False((await late.AcquireAsync("ann")).IsAcquired);
        Assert.Equal(10, await Counted("ann"));
        Assert.False((await ahead.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_KeyCountsAWindowTwoAheadOfTheNode_TheCachedRefusalLastsUntilThatWindow()
    {
        // The other node's clock is two windows ahead: this node is refused until its clock reaches that window (2 min),
        // not until its own window ends (1 min), where it would only be refused again.
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromMinutes(2));
        await using PartitionedRateLimiter<string> late = FixedWindow(_connection, limit: 10);
        await using PartitionedRateLimiter<string> early = RedisLimiter.CreateFixedWindow<string>(
            key => key,
            _ => new FixedWindowRateLimiterOptions { PermitLimit = 10, Window = TimeSpan.FromMinutes(1) },
            Options(_connection).With(o => { o.ClientClock = ahead; o.TimeProvider = ahead; }));
        Assert.True((await early.AcquireAsync("ann")).IsAcquired);

        using RateLimitLease refused = await late.AcquireAsync("ann");

        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromMinutes(2), retryAfter);
    }

    [Fact]
    public async Task DisposeAsync_UnusedPermits_GoBackToRedis()
    {
        PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 10_000);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        for (int i = 0; i < 100; i++)
        {
            Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        }

        // The last acquires may have left the block empty with a background refill still on the wire: Redis counts the
        // refill's grant only once it lands, so read after it did.
        await Eventually(() => Task.FromResult(!engine.Local!.RefillInFlight("ann")));
        Assert.True(await Counted("ann") > 100);
        await limiter.DisposeAsync();
        Assert.Equal(100, await Counted("ann"));
    }

    [Fact]
    public async Task IdleKey_UnusedPermitsGoBackAndTheKeyIsForgotten()
    {
        await using PartitionedRateLimiter<string> limiter = FixedWindow(_connection, limit: 10_000);
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;
        for (int i = 0; i < 100; i++)
        {
            Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        }

        await Eventually(() => Task.FromResult(!engine.Local!.RefillInFlight("ann"))); // a background refill lands first: the fake clock must not jump past a call on the wire
        _time.Advance(TimeSpan.FromSeconds(1)); // IdleReturn: the sweep returns the block
        await Eventually(async () => await Counted("ann") == 100);
        Assert.Equal(0, engine.Local!.KeyCount);
    }

    [Fact]
    public void Create_HybridForAnAlgorithmItDoesNotServe_ThrowsAtConstruction()
    {
        var options = Options(_connection);
        Assert.Throws<ArgumentException>(() => RedisLimiter.CreateTokenBucket<string>(
            u => u, _ => new TokenBucketRateLimiterOptions { TokenLimit = 1, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromSeconds(1) }, options));
        Assert.Throws<ArgumentException>(() => RedisLimiter.CreateSlidingWindowLog<string>(
            u => u, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromSeconds(1) }, options));
        Assert.Throws<ArgumentOutOfRangeException>(() => FixedWindow(_connection, limit: 5, maxBlock: 0));
    }

    /// <summary>
    /// Three nodes, three callers each, one key, while a driver moves the shared fake clock 100 ms at a time. A caller takes
    /// the clock's read lock around its acquire, so the time it records is the time its permit was used; the uses are
    /// checked offline against the fixed window's guarantee, across all nodes.
    /// </summary>
    [Theory]
    [InlineData("fixed")]
    [InlineData("counter")]
    public void AttemptAcquire_ThreeNodes_UsesNeverPassTheCapTogether(string algorithm)
    {
        const int Limit = 60;
        // Fake windows of 5 s, 100 ms a tick: the fake clock runs faster than real time, since Redis expires keys on its
        // real clock (a key lives the fake time its state matters plus a second); with 50 ms windows, a window that took
        // a loaded second of real time would see its count expire mid-window.
        const long WindowMicroseconds = 5_000_000;
        var gate = new ReaderWriterLockSlim();
        ConnectionMultiplexer[] connections = [.. Enumerable.Range(0, 3).Select(_ => _server.Connect())];
        PartitionedRateLimiter<string>[] nodes = [.. connections.Select(connection => algorithm == "fixed"
            ? FixedWindow(connection, Limit, window: TimeSpan.FromTicks(WindowMicroseconds * 10), maxBlock: 16)
            : RedisLimiter.CreateSlidingWindowCounter<string>(
                key => key,
                _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = Limit, Window = TimeSpan.FromTicks(WindowMicroseconds * 10), SegmentsPerWindow = 5 },
                Options(connection, maxBlock: 16)))];
        try
        {
            var uses = new ConcurrentBag<Admitted>();
            long refused = 0;
            using var stop = new CancellationTokenSource();
            long attempts = 0;
            var driver = new Thread(() =>
            {
                // Fake time moves with the callers' progress (100 ms per 16 attempts), not with real time: on a
                // machine busy with other tests, real-time ticks let windows pass before the callers could reach the cap.
                long seen = 0;
                while (!stop.IsCancellationRequested)
                {
                    if (Volatile.Read(ref attempts) - seen < 16)
                    {
                        Thread.Sleep(1);
                        continue;
                    }

                    seen = Volatile.Read(ref attempts);
                    gate.EnterWriteLock();
                    _time.Advance(TimeSpan.FromMilliseconds(100));
                    gate.ExitWriteLock();
                }
            });
            driver.Start();
            DateTimeOffset end = _time.GetUtcNow() + TimeSpan.FromTicks(WindowMicroseconds * 10 * 12); // 12 windows of fake time
            var callers = nodes.SelectMany(node => Enumerable.Range(0, 3).Select(caller => new Thread(() =>
            {
                var random = new Random(caller);
                while (_time.GetUtcNow() < end)
                {
                    int permits = random.Next(1, 3);
                    Interlocked.Increment(ref attempts);
                    gate.EnterReadLock();
                    try
                    {
                        using RateLimitLease lease = node.AttemptAcquire("shared", permits);
                        if (lease.IsAcquired)
                        {
                            uses.Add(new Admitted((_time.GetUtcNow().UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / 10, permits));
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
            }))).ToArray();
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

            LimiterSpec spec = algorithm == "fixed"
                ? new LimiterSpec(LimiterKind.Fixed, Limit, WindowMicroseconds)
                : new LimiterSpec(LimiterKind.Counter, Limit, WindowMicroseconds, Segments: 5);
            Assert.Null(Guarantee.FindViolation(spec, uses));
            long[] perWindow = [.. uses.GroupBy(use => use.Stamp / WindowMicroseconds).OrderBy(g => g.Key).Skip(1).SkipLast(1).Select(g => g.Sum(use => use.Permits))];
            _output.WriteLine($"{algorithm}: {uses.Count} uses, {refused} refusals; permits used per window (limit {Limit}): {string.Join(' ', perWindow)}");
            Assert.True(perWindow.Length >= 8 && perWindow.Average() > Limit / 2.0, $"{uses.Count} uses: the run never filled its windows");
            Assert.True(refused > 0, "nothing was refused: the run never reached the cap");
        }
        finally
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
    }

    /// <summary>Polls until the condition holds, at most 20 s (a loaded machine's round trips and timers run late).</summary>
    private static async Task Eventually(Func<Task<bool>> condition)
    {
        long giveUp = Environment.TickCount64 + 20_000;
        while (!await condition() && Environment.TickCount64 < giveUp)
        {
            await Task.Delay(20);
        }

        Assert.True(await condition());
    }

    /// <summary>What Redis counts for the key's fixed window (its one key of that algorithm, whatever its window).</summary>
    private async Task<long> Counted(string key)
    {
        IServer server = _connection.GetServer(_connection.GetEndPoints()[0]);
        RedisKey counted = Assert.Single(server.Keys(pattern: $"{_prefix}:{{{key}}}:fw-*"));
        return (long)await _connection.GetDatabase().HashGetAsync(counted, "c");
    }

    private PartitionedRateLimiter<string> FixedWindow(ConnectionMultiplexer connection, int limit, TimeSpan? window = null, int maxBlock = 64) =>
        RedisLimiter.CreateFixedWindow<string>(
            key => key,
            _ => new FixedWindowRateLimiterOptions { PermitLimit = limit, Window = window ?? TimeSpan.FromMinutes(1) },
            Options(connection, maxBlock));

    private RedisLimiterOptions Options(ConnectionMultiplexer connection, int maxBlock = 64) => new()
    {
        Connection = connection,
        KeyPrefix = _prefix,
        ClientClock = _time,
        TimeProvider = _time,
        SyncTimeout = TimeSpan.FromSeconds(2),
        Hybrid = new RedisHybridOptions { MaxBlock = maxBlock, IdleReturn = TimeSpan.FromSeconds(1) },
    };
}
