using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Redis.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>
/// Each algorithm's decisions on a real Redis, on a fake client clock (<see cref="RedisLimiterOptions.ClientClock"/>) so
/// that every boundary is exact; one test checks the server's own clock.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class RedisLimiterTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 12, 2, 12, 0, 0, TimeSpan.Zero);

    private readonly RedisServer _server;
    private readonly ConnectionMultiplexer _connection;
    private readonly FakeTimeProvider _time = new(Start);
    private readonly string _prefix = "test-" + Guid.NewGuid().ToString("N");

    public RedisLimiterTests(RedisServer server)
    {
        _server = server;
        _connection = server.Connect();
    }

    public void Dispose() => _connection.Dispose();

    [Fact]
    public async Task FixedWindow_LimitReached_RefusesUntilTheNextAlignedWindow()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateFixedWindow<string>(
            user => user, _ => new FixedWindowRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromMinutes(1) }, Options());
        _time.Advance(TimeSpan.FromSeconds(20));

        Assert.True((await limiter.AcquireAsync("ann", 2)).IsAcquired);
        Assert.True(limiter.AttemptAcquire("ann").IsAcquired);
        using RateLimitLease refused = await limiter.AcquireAsync("ann");
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(40), retryAfter);
        Assert.True((await limiter.AcquireAsync("bob", 3)).IsAcquired); // another key, its own window
        Assert.False((await limiter.AcquireAsync("ann", 0)).IsAcquired); // zero permits: is one free? no

        _time.Advance(TimeSpan.FromSeconds(40) - TimeSpan.FromTicks(10));
        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired);
        _time.Advance(TimeSpan.FromTicks(10));
        Assert.True((await limiter.AcquireAsync("ann", 3)).IsAcquired);
    }

    [Fact]
    public async Task FixedWindow_ANodeWhoseClockIsBehind_NeverResetsTheLaterWindowsCount()
    {
        // Node A's clock is already in the next window, node B's a second behind: B must not decide in the earlier window
        // (writing it would wipe the later window's count, and the two would reset each other's counts for ever).
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromMinutes(1));
        var behind = new FakeTimeProvider(Start + TimeSpan.FromMinutes(1) - TimeSpan.FromSeconds(1));
        var options = new FixedWindowRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromMinutes(1) };
        using PartitionedRateLimiter<string> a = RedisLimiter.CreateFixedWindow<string>(user => user, _ => options, Options().With(o => o.ClientClock = ahead));
        using PartitionedRateLimiter<string> b = RedisLimiter.CreateFixedWindow<string>(user => user, _ => options, Options().With(o => o.ClientClock = behind));

        Assert.True((await a.AcquireAsync("ann", 3)).IsAcquired);
        using RateLimitLease refused = await b.AcquireAsync("ann");
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(1), retryAfter);
        Assert.False((await a.AcquireAsync("ann")).IsAcquired); // the later window's count survived

        behind.Advance(TimeSpan.FromSeconds(1)); // B reaches the window: it shares A's count
        Assert.False((await b.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task FixedWindow_KeyCountsAWindowTwoAheadOfTheCaller_RetryAfterReachesThatWindow()
    {
        // Node A's clock is two windows ahead of B's: B is refused until its clock reaches A's window, 61 s away, not until
        // its own window ends in 1 s (where it would be refused again).
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromMinutes(2));
        var behind = new FakeTimeProvider(Start + TimeSpan.FromMinutes(1) - TimeSpan.FromSeconds(1));
        var options = new FixedWindowRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromMinutes(1) };
        using PartitionedRateLimiter<string> a = RedisLimiter.CreateFixedWindow<string>(user => user, _ => options, Options().With(o => o.ClientClock = ahead));
        using PartitionedRateLimiter<string> b = RedisLimiter.CreateFixedWindow<string>(user => user, _ => options, Options().With(o => o.ClientClock = behind));
        Assert.True((await a.AcquireAsync("ann")).IsAcquired);

        using RateLimitLease refused = await b.AcquireAsync("ann");

        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(61), retryAfter);
        behind.Advance(retryAfter);
        Assert.True((await b.AcquireAsync("ann")).IsAcquired); // one of A's three is counted: B shares the rest
    }

    [Fact]
    public async Task TokenBucket_Drained_RefillsContinuouslyAtTheRate()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateTokenBucket<string>(
            user => user,
            _ => new TokenBucketRateLimiterOptions { TokenLimit = 10, TokensPerPeriod = 2, ReplenishmentPeriod = TimeSpan.FromSeconds(1) },
            Options());

        Assert.True((await limiter.AcquireAsync("ann", 10)).IsAcquired);
        using RateLimitLease refused = await limiter.AcquireAsync("ann", 3);
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(1.5), retryAfter); // 3 tokens at 2 per second

        _time.Advance(TimeSpan.FromSeconds(1.5) - TimeSpan.FromTicks(10));
        Assert.False((await limiter.AcquireAsync("ann", 3)).IsAcquired);
        _time.Advance(TimeSpan.FromTicks(10));
        Assert.True((await limiter.AcquireAsync("ann", 3)).IsAcquired);

        _time.Advance(TimeSpan.FromMinutes(1)); // full again, never beyond the limit
        Assert.True((await limiter.AcquireAsync("ann", 10)).IsAcquired);
        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task TokenBucket_LimitLoweredAtTheSameInstant_NeverSpendsTheOldBalance()
    {
        // A node with the new, lower limit reads the state another node wrote under the old one, at a time not later than
        // its last refill: the stored balance (99 tokens) must be cut to the new full bucket (10). It was used as it was,
        // and the negative expiry that followed deleted the key: a second burst of 10 at the same instant.
        using PartitionedRateLimiter<string> before = RedisLimiter.CreateTokenBucket<string>(
            user => user,
            _ => new TokenBucketRateLimiterOptions { TokenLimit = 100, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromSeconds(1) },
            Options());
        using PartitionedRateLimiter<string> after = RedisLimiter.CreateTokenBucket<string>(
            user => user,
            _ => new TokenBucketRateLimiterOptions { TokenLimit = 10, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromSeconds(1) },
            Options());
        Assert.True((await before.AcquireAsync("ann", 1)).IsAcquired);

        Assert.True((await after.AcquireAsync("ann", 10)).IsAcquired);
        Assert.False((await after.AcquireAsync("ann", 10)).IsAcquired);
        Assert.False((await after.AcquireAsync("ann", 1)).IsAcquired);
    }

    [Fact]
    public async Task SlidingWindowCounter_TwoShapesOfOneKey_EachKeepsItsOwnCount()
    {
        // Two nodes disagree on a key's window (a rolling deploy changed it). The one with 1 s segments must not wipe the
        // history of the one with 10 s segments (it would delete every segment older than its own window), or the latter
        // admits its limit again within its window.
        using PartitionedRateLimiter<string> longer = RedisLimiter.CreateSlidingWindowCounter<string>(
            user => user, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 5, Window = TimeSpan.FromSeconds(100), SegmentsPerWindow = 10 }, Options());
        using PartitionedRateLimiter<string> shorter = RedisLimiter.CreateSlidingWindowCounter<string>(
            user => user, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 5, Window = TimeSpan.FromSeconds(10), SegmentsPerWindow = 10 }, Options());

        Assert.True((await longer.AcquireAsync("ann", 5)).IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(30));
        Assert.True((await shorter.AcquireAsync("ann")).IsAcquired);

        Assert.False((await longer.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task SlidingWindowCounter_PermitsExpireOneSegmentAfterTheirWindow()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateSlidingWindowCounter<string>(
            user => user,
            _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 4, Window = TimeSpan.FromSeconds(4), SegmentsPerWindow = 4 },
            Options());

        Assert.True((await limiter.AcquireAsync("ann", 3)).IsAcquired); // segment 0
        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired); // segment 2
        using RateLimitLease refused = await limiter.AcquireAsync("ann");
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(3), retryAfter); // segment 0 is counted until segment 5 begins

        _time.Advance(TimeSpan.FromSeconds(3) - TimeSpan.FromTicks(10));
        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired);
        _time.Advance(TimeSpan.FromTicks(10));
        Assert.True((await limiter.AcquireAsync("ann", 3)).IsAcquired);
        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task SlidingWindowLog_EachPermitExpiresExactlyOneWindowAfterItsAdmission()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateSlidingWindowLog<string>(
            user => user, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromSeconds(10) }, Options());

        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired); // t = 0
        _time.Advance(TimeSpan.FromSeconds(4));
        Assert.True((await limiter.AcquireAsync("ann", 2)).IsAcquired); // t = 4
        using RateLimitLease refused = await limiter.AcquireAsync("ann", 2);
        Assert.False(refused.IsAcquired);
        Assert.True(refused.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(TimeSpan.FromSeconds(10), retryAfter); // two must go: the second one leaves at t = 14

        _time.Advance(TimeSpan.FromSeconds(6));
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired); // t = 10: the first left
        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task SlidingWindowLog_ClockAheadThenOneBehind_DecidesAtTheKeysTimeAndKeepsItsTtl()
    {
        // One node's clock an hour ahead drops the permits the others counted an hour earlier (they are over, on its
        // clock). The log's time never goes back after that: a node behind it decides at the key's newest decision, so no
        // window of decision times holds more than the limit, and the key outlives what it counts on that time.
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromHours(1));
        var options = new SlidingWindowLogRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromMinutes(1) };
        using PartitionedRateLimiter<string> behindLimiter = RedisLimiter.CreateSlidingWindowLog<string>(user => user, _ => options, Options());
        using PartitionedRateLimiter<string> aheadLimiter = RedisLimiter.CreateSlidingWindowLog<string>(user => user, _ => options, Options().With(o => o.ClientClock = ahead));
        var behind = (RedisPartitionedLimiter<string, SlidingWindowLogRateLimiterOptions>)behindLimiter;
        var first = (RedisPartitionedLimiter<string, SlidingWindowLogRateLimiterOptions>)aheadLimiter;
        var stamps = new List<long>();

        await Admit(behind, 3);
        await Admit(first, 1);
        _time.Advance(TimeSpan.FromSeconds(2));
        await Admit(behind, 2);

        long window = (long)options.Window.TotalMicroseconds;
        Assert.All(stamps, from => Assert.InRange(stamps.Count(stamp => stamp >= from && stamp < from + window), 1, 3));
        RedisKey key = Assert.Single(_connection.GetServer(_connection.GetEndPoints()[0]).Keys(pattern: $"*{_prefix}*"));
        Assert.True(_connection.GetDatabase().KeyTimeToLive(key) > TimeSpan.FromHours(1), "the key expires before the key's newest permits do");

        async Task Admit(RedisPartitionedLimiter<string, SlidingWindowLogRateLimiterOptions> limiter, int times)
        {
            for (int i = 0; i < times; i++)
            {
                RedisDecision decision = RedisPartitionedLimiter<string, object>.Decision(await limiter.Evaluate("ann", 1));
                Assert.True(decision.Admitted);
                stamps.Add(decision.StampMicroseconds);
            }
        }
    }

    [Fact]
    public async Task SlidingWindowCounter_CallerBehindALaterSegment_DecidesInIt()
    {
        // A node an hour ahead drops the segment the others counted as over. A node on time then decides in the key's
        // later segment: deciding in its own would count without that segment and admit 3 + 2 in one minute of its
        // clock, and the fast node 2 more in one of its own.
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromHours(1));
        var options = new SlidingWindowCounterRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromMinutes(1), SegmentsPerWindow = 6 };
        using PartitionedRateLimiter<string> behind = RedisLimiter.CreateSlidingWindowCounter<string>(user => user, _ => options, Options());
        using PartitionedRateLimiter<string> first = RedisLimiter.CreateSlidingWindowCounter<string>(user => user, _ => options, Options().With(o => o.ClientClock = ahead));
        var counter = (RedisPartitionedLimiter<string, SlidingWindowCounterRateLimiterOptions>)behind;

        Assert.True((await behind.AcquireAsync("ann", 3)).IsAcquired);
        Assert.True((await first.AcquireAsync("ann")).IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(2));
        RedisDecision decided = RedisPartitionedLimiter<string, object>.Decision(await counter.Evaluate("ann", 2));
        ahead.Advance(TimeSpan.FromSeconds(3));
        using RateLimitLease refused = await first.AcquireAsync("ann");

        Assert.True(decided.Admitted);
        Assert.Equal((Start + TimeSpan.FromHours(1) - DateTimeOffset.UnixEpoch).Ticks / 10, decided.StampMicroseconds); // the segment's start
        Assert.False(refused.IsAcquired);
    }

    [Theory]
    [InlineData("counter")]
    [InlineData("log")]
    public async Task AcquireAsync_RefusedOnAClockAhead_DropsNothingACallerBehindStillCounts(string kind)
    {
        // A call that writes nothing leaves the key's time where it was: what it would drop as over on its own clock (the
        // 2 permits of second 1, seen from second 72) still counts for a node at second 57, which admitted 2 more without it.
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromSeconds(72));
        using PartitionedRateLimiter<string> behind = Create(Options());
        using PartitionedRateLimiter<string> fast = Create(Options().With(o => o.ClientClock = ahead));
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.True((await behind.AcquireAsync("ann", 2)).IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(54));
        Assert.True((await behind.AcquireAsync("ann", 1)).IsAcquired);

        Assert.False((await fast.AcquireAsync("ann", 3)).IsAcquired);
        Assert.True((await fast.AcquireAsync("ann", 0)).IsAcquired); // a probe: nothing written either
        _time.Advance(TimeSpan.FromSeconds(2));

        Assert.False((await behind.AcquireAsync("ann", 2)).IsAcquired);

        PartitionedRateLimiter<string> Create(RedisLimiterOptions options) => kind == "log"
            ? RedisLimiter.CreateSlidingWindowLog<string>(user => user, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromMinutes(1) }, options)
            : RedisLimiter.CreateSlidingWindowCounter<string>(
                user => user, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 3, Window = TimeSpan.FromMinutes(1), SegmentsPerWindow = 6 }, options);
    }

    [Fact]
    public async Task SlidingWindowCounter_ClocksMillisecondsApartAtABoundary_RefusesNothing()
    {
        // A node 2 ms ahead writes the next segment first; the node on time, still in the segment before, is not refused.
        var options = new SlidingWindowCounterRateLimiterOptions { PermitLimit = 10, Window = TimeSpan.FromSeconds(1), SegmentsPerWindow = 10 };
        var ahead = new FakeTimeProvider(Start + TimeSpan.FromMilliseconds(1));
        _time.Advance(TimeSpan.FromMilliseconds(99));
        using PartitionedRateLimiter<string> onTime = RedisLimiter.CreateSlidingWindowCounter<string>(user => user, _ => options, Options());
        using PartitionedRateLimiter<string> fast = RedisLimiter.CreateSlidingWindowCounter<string>(user => user, _ => options, Options().With(o => o.ClientClock = ahead));
        ahead.Advance(TimeSpan.FromMilliseconds(100));

        Assert.True((await fast.AcquireAsync("ann")).IsAcquired);
        Assert.True((await onTime.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task SlidingWindowLog_WindowNotAWholeMicrosecond_IsRoundedUpNotDown()
    {
        // A window of 1 s + 0.5 µs: scripts count in whole microseconds, and a window rounded down to 1 s would let a
        // second permit in at exactly 1 s, inside the configured window (the in-process log refuses it).
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateSlidingWindowLog<string>(
            user => user, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromTicks(10_000_005) }, Options());

        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired);
        _time.Advance(TimeSpan.FromTicks(10));
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task SlidingWindowLog_LimitAboveTheRedisBound_IsRefusedBeforeAnyScriptRuns()
    {
        // One member per permit, added in one script: an acquire of a 2^24 limit would block the server for over a minute.
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateSlidingWindowLog<string>(
            user => user,
            user => new SlidingWindowLogRateLimiterOptions { PermitLimit = user == "big" ? RedisLimiter.MaxSlidingWindowLogPermitLimit + 1 : RedisLimiter.MaxSlidingWindowLogPermitLimit, Window = TimeSpan.FromMinutes(1) },
            Options());

        var error = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await limiter.AcquireAsync("big"));
        Assert.Contains("sliding-window counter", error.Message, StringComparison.Ordinal);
        Assert.Empty(_connection.GetServer(_server.Endpoint).Keys(pattern: _prefix + ":*"));

        Assert.True((await limiter.AcquireAsync("ann", RedisLimiter.MaxSlidingWindowLogPermitLimit)).IsAcquired);
        Assert.False((await limiter.AcquireAsync("ann")).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_ServerClock_DecidesOnRedisTime()
    {
        // The node's TimeProvider is years off: a decision made on any client clock instead of the server's TIME shows.
        var yearsOff = new FakeTimeProvider(new DateTimeOffset(2001, 1, 1, 0, 0, 0, TimeSpan.Zero));
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateFixedWindow<string>(
            user => user,
            _ => new FixedWindowRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromHours(1) },
            Options(serverClock: true).With(options => options.TimeProvider = yearsOff));
        var engine = (RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter;

        RedisDecision decision = RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>.Decision(await engine.Evaluate("ann", 1));
        long serverNow = (await _connection.GetServer(_server.Endpoint).TimeAsync()).Ticks;
        long stamp = DateTimeOffset.UnixEpoch.UtcTicks + (decision.StampMicroseconds * 10);
        Assert.True(decision.Admitted);
        Assert.InRange(serverNow - stamp, 0, TimeSpan.TicksPerSecond * 5);
    }

    [Fact]
    public async Task AcquireAsync_Cancelled_ThrowsAndNeverAdmitsMoreThanTheCap()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateFixedWindow<string>(
            user => user, _ => new FixedWindowRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1) }, Options());
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await limiter.AcquireAsync("ann", 1, cancelled.Token));
        Assert.Empty(_connection.GetServer(_server.Endpoint).Keys(pattern: _prefix + ":*")); // nothing was sent

        // Cancelled while the server is paused: the call is given up on, and its script may still run later. It counts
        // then (stricter), so the cap still holds.
        using (ConnectionMultiplexer admin = _server.Connect(admin: true))
        {
            await admin.GetServer(_server.Endpoint).ExecuteAsync("CLIENT", "PAUSE", "400", "WRITE");
            using var soon = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await limiter.AcquireAsync("ann", 1, soon.Token));
        }

        await Task.Delay(TimeSpan.FromMilliseconds(600));
        int admitted = 0;
        for (int i = 0; i < 3; i++)
        {
            admitted += (await limiter.AcquireAsync("ann")).IsAcquired ? 1 : 0;
        }

        Assert.InRange(admitted, 1, 2); // the given-up call took one of the two, or none if it never ran
    }

    [Fact]
    public async Task AcquireAsync_ScriptCacheFlushed_SendsTheScriptAgain()
    {
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateSlidingWindowLog<string>(
            user => user, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1) }, Options());
        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);

        using (ConnectionMultiplexer admin = _server.Connect(admin: true))
        {
            await admin.GetServer(_server.Endpoint).ScriptFlushAsync();
        }

        Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        Assert.False(limiter.AttemptAcquire("ann").IsAcquired); // the state survived: it lives in the keys
    }

    [Fact]
    public async Task AcquireAsync_EveryKeyWritten_HasAHashTagAndATimeToLive()
    {
        using PartitionedRateLimiter<string> fixedWindow = RedisLimiter.CreateFixedWindow<string>(
            user => user, _ => new FixedWindowRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1) }, Options(serverClock: true));
        using PartitionedRateLimiter<string> log = RedisLimiter.CreateSlidingWindowLog<string>(
            user => user, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1) }, Options(serverClock: true));
        using PartitionedRateLimiter<string> bucket = RedisLimiter.CreateTokenBucket<string>(
            user => user, _ => new TokenBucketRateLimiterOptions { TokenLimit = 2, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromMinutes(1) }, Options(serverClock: true));
        using PartitionedRateLimiter<string> counter = RedisLimiter.CreateSlidingWindowCounter<string>(
            user => user, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1), SegmentsPerWindow = 6 }, Options(serverClock: true));
        foreach (PartitionedRateLimiter<string> limiter in new[] { fixedWindow, log, bucket, counter })
        {
            Assert.True((await limiter.AcquireAsync("ann")).IsAcquired);
        }

        IServer server = _connection.GetServer(_server.Endpoint);
        RedisKey[] keys = [.. server.Keys(pattern: _prefix + ":*")];
        Assert.Equal(4, keys.Length);
        foreach (RedisKey key in keys)
        {
            Assert.StartsWith(_prefix + ":{ann}:", key.ToString(), StringComparison.Ordinal);
            TimeSpan? ttl = await _connection.GetDatabase().KeyTimeToLiveAsync(key);
            Assert.NotNull(ttl);
            Assert.InRange(ttl.Value, TimeSpan.FromMilliseconds(1), TimeSpan.FromMinutes(1.2));
        }
    }

    [Fact]
    public async Task AcquireAsync_BadInput_ThrowsClearlyAndWritesNothing()
    {
        using PartitionedRateLimiter<string?> limiter = RedisLimiter.CreateFixedWindow<string?>(
            user => user!, _ => new FixedWindowRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1) }, Options());
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await limiter.AcquireAsync("ann", 3));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await limiter.AcquireAsync("ann", -1));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await limiter.AcquireAsync(null));
        Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire("ann", 3));
        Assert.Empty(_connection.GetServer(_server.Endpoint).Keys(pattern: _prefix + ":*"));

        using PartitionedRateLimiter<string> queued = RedisLimiter.CreateFixedWindow<string>(
            user => user, _ => new FixedWindowRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1), QueueLimit = 1 }, Options());
        var error = await Assert.ThrowsAsync<ArgumentException>(async () => await queued.AcquireAsync("ann"));
        Assert.Contains("does not queue", error.Message, StringComparison.Ordinal);

        limiter.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await limiter.AcquireAsync("ann"));
    }

    [Fact]
    public void Create_InvalidOptions_ThrowsAtConstruction()
    {
        var window = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromSeconds(1) };
        Assert.Throws<ArgumentException>(() => RedisLimiter.CreateFixedWindow<string>(u => u, _ => window, new RedisLimiterOptions()));
        Assert.Throws<ArgumentException>(() => RedisLimiter.CreateFixedWindow<string>(u => u, _ => window, Options() .With(o => o.KeyPrefix = " ")));
        Assert.Throws<ArgumentException>(() => RedisLimiter.CreateFixedWindow<string>(u => u, _ => window, Options().With(o => o.KeyPrefix = "}a"))); // inside a hash tag
        Assert.Throws<ArgumentException>(() => new RedisRatePolicyBuilder<string>(Options().With(o => o.KeyPrefix = "a{b"))
            .AddLayer("user", u => u, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1)).Build());
        Assert.Throws<ArgumentOutOfRangeException>(() => RedisLimiter.CreateFixedWindow<string>(u => u, _ => window, Options().With(o => o.SyncTimeout = TimeSpan.Zero)));
        Assert.Throws<ArgumentNullException>(() => RedisLimiter.CreateFixedWindow<string>(null!, _ => window, Options()));

        // Past what a thread's wait, a timestamp's sum or a timer takes: refused here, not failing at the first acquire.
        Assert.Throws<ArgumentOutOfRangeException>(() => RedisLimiter.CreateFixedWindow<string>(u => u, _ => window, Options().With(o => o.SyncTimeout = TimeSpan.FromDays(25))));
        Assert.Throws<ArgumentOutOfRangeException>(() => RedisLimiter.CreateFixedWindow<string>(u => u, _ => window, Options().With(o => o.FailureCooldown = TimeSpan.MaxValue)));
        Assert.Throws<ArgumentOutOfRangeException>(() => RedisLimiter.CreateFixedWindow<string>(u => u, _ => window, Options().With(o => o.Hybrid = new RedisHybridOptions { IdleReturn = TimeSpan.FromDays(50) })));
        using PartitionedRateLimiter<string> microSegments = RedisLimiter.CreateSlidingWindowCounter<string>(
            u => u, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromMilliseconds(1), SegmentsPerWindow = 10_000 }, Options());
        Assert.Throws<ArgumentOutOfRangeException>(() => microSegments.AttemptAcquire("ann")); // segments under a microsecond
        using PartitionedRateLimiter<string> huge = RedisLimiter.CreateTokenBucket<string>(
            u => u, _ => new TokenBucketRateLimiterOptions { TokenLimit = 1_000_000_000, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromDays(1) }, Options());
        Assert.Throws<ArgumentOutOfRangeException>(() => huge.AttemptAcquire("ann"));
    }

    private RedisLimiterOptions Options(bool serverClock = false) => new()
    {
        Connection = _connection,
        KeyPrefix = _prefix,
        ClientClock = serverClock ? null : _time,
        SyncTimeout = TimeSpan.FromSeconds(2),
    };
}

internal static class OptionsExtensions
{
    public static RedisLimiterOptions With(this RedisLimiterOptions options, Action<RedisLimiterOptions> change)
    {
        change(options);
        return options;
    }
}
