using System.Diagnostics;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Partitioning;
using RateEngine.Tests.Support;
using RateEngine.Timing;
using Xunit.Abstractions;

namespace RateEngine.Tests.Partitioning;

public class PartitionedLimiterTests
{
    [Fact]
    public void AttemptAcquire_FloodOfKeysOfOneHash_IsRefusedWithoutResolvingEachKey()
    {
        // long keys whose halves are equal all hash to 0 (long.GetHashCode is lo ^ hi): four are taken, and every further one
        // was refused only after the options resolver and the shard's lock, once per request.
        int resolved = 0;
        using PartitionedRateLimiter<long> limiter = PartitionedLimiter.CreateFixedWindow<long, long>(
            key => key, _ => { resolved++; return TwoPerMinute; }, new() { TimeProvider = new FakeTimeProvider() });
        for (long i = 1; i <= 5; i++)
        {
            limiter.AttemptAcquire((i << 32) | i).Dispose();
        }

        int before = resolved;
        for (long i = 6; i < 10_006; i++)
        {
            using RateLimitLease refused = limiter.AttemptAcquire((i << 32) | i);
            Assert.False(refused.IsAcquired);
            Assert.True(refused.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
            Assert.Equal(RateEngine.Limiters.ReasonPhrases.TooManyCollisions, reason);
        }

        Assert.Equal(before, resolved);
        Assert.True(limiter.AttemptAcquire(1L << 40).IsAcquired); // a key of another hash still gets in
    }

    private static readonly FixedWindowRateLimiterOptions TwoPerMinute = new() { PermitLimit = 2, Window = TimeSpan.FromMinutes(1), QueueLimit = 4 };

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SweepAllShards_StalledPast2To20WindowsWhileTheKeyFillsItsWindow_DoesNotEvictIt(bool counter)
    {
        // The sweep found the key idle, then stalled (or the clock stepped forward) more than 2^20 windows before its mark,
        // while a request filled the key's window. Re-checked at the sweep's first reading, the busy window word read as one
        // far behind (33-bit epochs wrap), so as idle: the key was evicted, and its new entry admitted the window again.
        var time = new FakeTimeProvider();
        var options = new PartitionedLimiterOptions { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromDays(3_650) };
        using PartitionedRateLimiter<int> limiter = counter
            ? PartitionedLimiter.CreateSlidingWindowCounter<int, int>(k => k, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 100, Window = TimeSpan.FromMilliseconds(1), SegmentsPerWindow = 1 }, options)
            : PartitionedLimiter.CreateFixedWindow<int, int>(k => k, _ => new FixedWindowRateLimiterOptions { PermitLimit = 100, Window = TimeSpan.FromMilliseconds(1) }, options);
        var diagnostics = (IPartitionDiagnostics)limiter;
        Assert.True(limiter.AttemptAcquire(7).IsAcquired);
        time.Advance(TimeSpan.FromMilliseconds(3)); // idle
        bool stalled = false;
        diagnostics.BeforeEvictionMark = () =>
        {
            if (!stalled)
            {
                stalled = true;
                time.Advance(TimeSpan.FromMilliseconds((1 << 20) + 1));
                for (int i = 0; i < 100; i++)
                {
                    Assert.True(limiter.AttemptAcquire(7).IsAcquired); // on the entry the sweep is looking at: not marked yet
                }
            }
        };

        diagnostics.SweepAllShards();
        diagnostics.BeforeEvictionMark = null;

        Assert.True(stalled);
        Assert.Equal(1, diagnostics.PartitionCount);
        Assert.False(limiter.AttemptAcquire(7).IsAcquired); // the window is full: not a new entry's
    }

    /// <summary>
    /// Keys of a limiter 2^33 windows old (1 ms windows: 99 days): a new key's state must count from now's window. One of
    /// window 0 read as a window up to 2^20 ahead (epochs wrap), and the key got one window's permits for 17 minutes.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AttemptAcquire_NewKeyJustBeforeTheEpochsWrap_EachWindowAdmitsItsLimit(bool counter)
    {
        var time = new FakeTimeProvider();
        var settings = new PartitionedLimiterOptions { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromDays(3650) };
        using PartitionedRateLimiter<string> limiter = counter
            ? PartitionedLimiter.CreateSlidingWindowCounter<string, string>(key => key, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromMilliseconds(2), SegmentsPerWindow = 2 }, settings)
            : PartitionedLimiter.CreateFixedWindow<string, string>(key => key, _ => new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromMilliseconds(1) }, settings);
        time.Advance(TimeSpan.FromMilliseconds((1L << 33) - 10));

        Assert.True(limiter.AttemptAcquire("new").IsAcquired);
        Assert.False(limiter.AttemptAcquire("new").IsAcquired);
        time.Advance(TimeSpan.FromMilliseconds(counter ? 3 : 1));
        Assert.True(limiter.AttemptAcquire("new").IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_DifferentKeys_HaveIndependentLimits()
    {
        using var limiter = PartitionedLimiter.CreateFixedWindow<string, string>(ip => ip, _ => TwoPerMinute, new() { TimeProvider = new FakeTimeProvider() });
        Assert.True(limiter.AttemptAcquire("10.0.0.1", 2).IsAcquired);
        Assert.False(limiter.AttemptAcquire("10.0.0.1").IsAcquired);
        Assert.True(limiter.AttemptAcquire("10.0.0.2", 2).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_ResolverGivesTiers_EachKeyGetsItsTier()
    {
        var free = new TokenBucketRateLimiterOptions { TokenLimit = 1, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromMinutes(1) };
        var paid = new TokenBucketRateLimiterOptions { TokenLimit = 10, TokensPerPeriod = 10, ReplenishmentPeriod = TimeSpan.FromMinutes(1) };
        using var limiter = PartitionedLimiter.CreateTokenBucket<string, string>(user => user, user => user.StartsWith("paid:", StringComparison.Ordinal) ? paid : free, new() { TimeProvider = new FakeTimeProvider() });
        Assert.True(limiter.AttemptAcquire("paid:ada", 10).IsAcquired);
        Assert.True(limiter.AttemptAcquire("free:bob").IsAcquired);
        Assert.False(limiter.AttemptAcquire("free:bob").IsAcquired);
        Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire("free:eve", 2));
    }

    [Fact]
    public async Task AcquireAsync_OneKeyQueued_OtherKeysAreNotBlocked()
    {
        var time = new FakeTimeProvider();
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(key => key, _ => TwoPerMinute, new() { TimeProvider = time });
        Assert.True(limiter.AttemptAcquire(1, 2).IsAcquired);
        ValueTask<RateLimitLease> waiting = limiter.AcquireAsync(1);
        Assert.False(waiting.IsCompleted);
        Assert.Equal(1, limiter.GetStatistics(1)!.CurrentQueuedCount);

        // Another key is served at once, and under OldestFirst the queued key refuses new attempts.
        Assert.True((await limiter.AcquireAsync(2, 2)).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1, 0).IsAcquired);

        time.Advance(TimeSpan.FromMinutes(1));
        using RateLimitLease lease = await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(lease.IsAcquired);
        Assert.Equal(0, limiter.GetStatistics(1)!.CurrentQueuedCount);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileQueued_ThrowsAndFreesTheQueue()
    {
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(key => key, _ => TwoPerMinute, new() { TimeProvider = new FakeTimeProvider() });
        Assert.True(limiter.AttemptAcquire(7, 2).IsAcquired);
        using var source = new CancellationTokenSource();
        ValueTask<RateLimitLease> waiting = limiter.AcquireAsync(7, 1, source.Token);
        source.Cancel();
        var cancelled = await Assert.ThrowsAsync<TaskCanceledException>(() => waiting.AsTask());
        Assert.Equal(source.Token, cancelled.CancellationToken);
        Assert.Equal(0, limiter.GetStatistics(7)!.CurrentQueuedCount);
    }

    [Fact]
    public async Task Dispose_WithQueuedWaiters_FailsThemAndRefusesFurtherUse()
    {
        var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(key => key, _ => TwoPerMinute, new() { TimeProvider = new FakeTimeProvider() });
        Assert.True(limiter.AttemptAcquire(1, 2).IsAcquired);
        ValueTask<RateLimitLease> waiting = limiter.AcquireAsync(1);
        await limiter.DisposeAsync();
        Assert.False((await waiting).IsAcquired);
        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire(1));
        Assert.Throws<ObjectDisposedException>(() => limiter.GetStatistics(1));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => limiter.AcquireAsync(1).AsTask());
    }

    [Fact]
    public void AttemptAcquire_TableFullOfActiveKeys_RefusesNewKeysWithReasonAndKeepsOldOnes()
    {
        var time = new FakeTimeProvider();
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(key => key, _ => TwoPerMinute, new() { TimeProvider = time, MaxPartitions = 64 });
        int refused = 0;
        RateLimitLease? refusal = null;
        for (int key = 0; key < 1_000; key++)
        {
            RateLimitLease lease = limiter.AttemptAcquire(key);
            if (!lease.IsAcquired)
            {
                refused++;
                refusal = lease;
            }
        }

        var diagnostics = (IPartitionDiagnostics)limiter;
        Assert.InRange(diagnostics.PartitionCount, 1, 64);
        Assert.Equal(1_000 - diagnostics.PartitionCount, refused);
        Assert.True(refusal!.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.Contains("MaxPartitions", reason, StringComparison.Ordinal);
        Assert.True(refusal.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan _));

        // Once the held keys are idle, new keys take their places.
        time.Advance(TimeSpan.FromMinutes(2));
        Assert.True(limiter.AttemptAcquire(5_000).IsAcquired);
    }

    [Fact]
    public void SweepTimer_IdleKeys_AreEvictedIncrementallyAndActiveKeysKept()
    {
        var time = new FakeTimeProvider();
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(
            key => key, _ => TwoPerMinute, new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromSeconds(64) });
        var diagnostics = (IPartitionDiagnostics)limiter;
        for (int key = 0; key < 10_000; key++)
        {
            Assert.True(limiter.AttemptAcquire(key).IsAcquired);
        }

        // Within the window nothing is idle, however many sweeps run.
        time.Advance(TimeSpan.FromSeconds(59));
        Assert.Equal(10_000, diagnostics.PartitionCount);

        // One shard per second: a second after the window ends, part of the table has been swept, not all of it.
        time.Advance(TimeSpan.FromSeconds(2));
        long partlySwept = diagnostics.PartitionCount;
        Assert.InRange(partlySwept, 1, 9_999);
        time.Advance(TimeSpan.FromSeconds(64));
        Assert.Equal(0, diagnostics.PartitionCount);

        // An evicted key starts fresh: two permits again.
        Assert.True(limiter.AttemptAcquire(3, 2).IsAcquired);
    }

    [Fact]
    public void SweepTimer_ClockThrows_SkipsTheShardAndSweepsLater()
    {
        // A sweep runs on a timer thread, where an exception would end the process: one that throws is skipped.
        var time = new FailingClock();
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(
            key => key, _ => TwoPerMinute, new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromSeconds(64) });
        var diagnostics = (IPartitionDiagnostics)limiter;
        Assert.True(limiter.AttemptAcquire(7).IsAcquired);

        time.Failing = true;
        time.Advance(TimeSpan.FromSeconds(130)); // every shard's sweep reads the clock and throws
        time.Failing = false;
        Assert.Equal(1, diagnostics.PartitionCount);

        time.Advance(TimeSpan.FromSeconds(130));
        Assert.Equal(0, diagnostics.PartitionCount);
    }

    public static TheoryData<LimiterKind> Kinds => new() { LimiterKind.Log, LimiterKind.Counter, LimiterKind.Fixed, LimiterKind.Bucket };

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task Acquire_KeySelectorReturnsNull_ThrowsArgumentNullAndCreatesNoKey(LimiterKind kind)
    {
        // A selector such as ctx => ctx.User.Identity?.Name gives null for every anonymous request.
        var spec = new LimiterSpec(kind, Limit: 5, WindowTicks: TimeSpan.FromMinutes(1).Ticks, Segments: 2, QueueLimit: 2);
        using PartitionedRateLimiter<string?> anonymous = Partitioned(kind, spec);
        for (int i = 0; i < 100; i++)
        {
            Assert.Equal("resource", Assert.Throws<ArgumentNullException>(() => anonymous.AttemptAcquire(null)).ParamName);
            Assert.Throws<ArgumentNullException>(() => { _ = anonymous.AcquireAsync(null); });
            Assert.Throws<ArgumentNullException>(() => anonymous.GetStatistics(null));
        }

        Assert.Equal(0, ((IPartitionDiagnostics)anonymous).PartitionCount);
        Assert.True((await anonymous.AcquireAsync("ada", 5)).IsAcquired);
        Assert.False(anonymous.AttemptAcquire("ada").IsAcquired);
    }

    /// <summary>A partitioned limiter of <paramref name="kind"/> keyed by user name, the name itself being the key (null for anonymous).</summary>
    private static PartitionedRateLimiter<string?> Partitioned(LimiterKind kind, LimiterSpec spec)
    {
        var settings = new PartitionedLimiterOptions { TimeProvider = new FakeTimeProvider(), MaxPartitions = 1_000 };
        TimeSpan window = TimeSpan.FromTicks(spec.WindowTicks);
        return kind switch
        {
            LimiterKind.Log => PartitionedLimiter.CreateSlidingWindowLog<string?, string>(
                name => name!, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = spec.Limit, Window = window, QueueLimit = spec.QueueLimit }, settings),
            LimiterKind.Counter => PartitionedLimiter.CreateSlidingWindowCounter<string?, string>(
                name => name!, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = spec.Limit, Window = window, SegmentsPerWindow = 2, QueueLimit = spec.QueueLimit }, settings),
            LimiterKind.Fixed => PartitionedLimiter.CreateFixedWindow<string?, string>(
                name => name!, _ => new FixedWindowRateLimiterOptions { PermitLimit = spec.Limit, Window = window, QueueLimit = spec.QueueLimit }, settings),
            _ => PartitionedLimiter.CreateTokenBucket<string?, string>(
                name => name!, _ => new TokenBucketRateLimiterOptions { TokenLimit = spec.Limit, TokensPerPeriod = 1, ReplenishmentPeriod = window, QueueLimit = spec.QueueLimit }, settings),
        };
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void AttemptAcquire_ClockSteppedBackHoursThenSwept_KeyKeepsItsCount(LimiterKind kind)
    {
        // A 1 ms window stepped back 3 hours is 10.8 million windows: beyond what an epoch word can read as "ahead".
        var time = new FakeTimeProvider();
        var spec = new LimiterSpec(kind, Limit: 5, WindowTicks: TimeSpan.FromMilliseconds(1).Ticks, Segments: 2, TokensPerPeriod: 5);
        using PartitionedRateLimiter<int> limiter = spec.CreatePartitioned(time);
        time.Advance(TimeSpan.FromHours(4));
        Assert.True(limiter.AttemptAcquire(1, 5).IsAcquired);

        time.AdjustTime(time.GetUtcNow() - TimeSpan.FromHours(3));
        ((IPartitionDiagnostics)limiter).SweepAllShards();

        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(1, ((IPartitionDiagnostics)limiter).PartitionCount);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(10)]
    [InlineData(63)]
    public void SweepTimer_IntervalBelowSixtyFourMilliseconds_KeepsSweepingEvery64Milliseconds(int intervalMilliseconds)
    {
        // Timers as real ones: a period below a millisecond would truncate to zero and stop the sweeps after one.
        var time = new MillisecondTimerTimeProvider(maxCallbacks: int.MaxValue);
        var tenMilliseconds = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromMilliseconds(10) };
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(
            key => key, _ => tenMilliseconds, new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromMilliseconds(intervalMilliseconds) });
        var diagnostics = (IPartitionDiagnostics)limiter;
        for (int round = 0; round < 3; round++)
        {
            for (int key = 0; key < 1_000; key++)
            {
                Assert.True(limiter.AttemptAcquire(key).IsAcquired);
            }

            // The floor: one shard per millisecond, the whole table in 64 ms, again and again.
            time.Advance(TimeSpan.FromMilliseconds(10 + 64));
            Assert.Equal(0, diagnostics.PartitionCount);
        }
    }

    [Fact]
    public void Sweep_ClockThrowsDuringTheEvictionsReCheck_LeavesTheKeyLiveAndTheTableSweepable()
    {
        // A long-idle bucket key: the sweep's re-check after marking it reads the clock again (a state more than 2^62 of
        // the bucket's units behind, 24 days at this rate, tells its age only with a fresh read). A clock that throws there
        // left the key marked evicted in the table: every request on it looked it up again for ever, and the next sweep
        // threw on the mark. Each run arms the clock to throw at a later read, so one of them throws at the re-check.
        var bucket = new TokenBucketRateLimiterOptions { TokenLimit = 2, TokensPerPeriod = int.MaxValue, ReplenishmentPeriod = TimeSpan.FromSeconds(1), QueueLimit = 0 };
        for (int reads = 0; reads < 8; reads++)
        {
            var time = new ThrowingClock();
            using PartitionedRateLimiter<int> limiter = PartitionedLimiter.CreateTokenBucket<int, int>(
                key => key, _ => bucket, new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromDays(3650) });
            Assert.True(limiter.AttemptAcquire(7).IsAcquired);
            time.Advance(TimeSpan.FromDays(100));

            time.ThrowAfter(reads);
            try
            {
                ((IPartitionDiagnostics)limiter).SweepAllShards();
            }
            catch (InvalidOperationException)
            {
            }

            time.ThrowAfter(null);
            ((IPartitionDiagnostics)limiter).SweepAllShards();
            Assert.True(limiter.AttemptAcquire(7).IsAcquired, $"throwing at read {reads}");
        }
    }

    /// <summary>
    /// A clock moved by hand that throws from a given read on, as a broken provider might. Its timers never fire, so that
    /// a jump of centuries does not sweep: the test sweeps when it chooses.
    /// </summary>
    private sealed class ThrowingClock : TimeProvider
    {
        private long _timestamp;
        private int? _readsLeft;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public void Advance(TimeSpan by) => _timestamp += by.Ticks;

        public void ThrowAfter(int? reads) => _readsLeft = reads;

        public override long GetTimestamp()
        {
            if (_readsLeft is { } left)
            {
                if (left <= 0)
                {
                    throw new InvalidOperationException("the clock failed");
                }

                _readsLeft = left - 1;
            }

            return _timestamp;
        }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) => new NeverFires();

        private sealed class NeverFires : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) => true;

            public void Dispose()
            {
            }

            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }

    [Fact]
    public void Create_IdleEvictionIntervalMaxValue_IsAcceptedAndCapsAtTheTimersLimit()
    {
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(
            key => key, _ => TwoPerMinute, new() { TimeProvider = new FakeTimeProvider(), IdleEvictionInterval = TimeSpan.MaxValue });
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_TableFullFloodOfNewKeys_RefusesWithoutConsultingTheResolverOrLocking()
    {
        var time = new FakeTimeProvider();
        int resolved = 0;
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(
            key => key, _ => { Interlocked.Increment(ref resolved); return TwoPerMinute; }, new() { TimeProvider = time, MaxPartitions = 64 });
        for (int key = 0; key < 64; key++)
        {
            Assert.True(limiter.AttemptAcquire(key).IsAcquired);
        }

        int beforeFlood = resolved;
        for (int key = 1_000; key < 101_000; key++)
        {
            Assert.False(limiter.AttemptAcquire(key).IsAcquired);
        }

        // At most one slow refusal per shard (it sweeps the shard for idle keys first); the rest are refused at once.
        Assert.InRange(resolved - beforeFlood, 0, 64);
        Assert.Equal(100_000, limiter.GetStatistics(0)!.TotalFailedLeases);
    }

    [Fact]
    public void Interop_WithTranslatedKeyAndCreateChained_AcceptOurLimiter()
    {
        using var perUser = PartitionedLimiter.CreateFixedWindow<string, string>(user => user, _ => TwoPerMinute, new() { TimeProvider = new FakeTimeProvider() });
        using var global = PartitionedRateLimiter.Create<string, int>(_ => RateLimitPartition.GetNoLimiter(0));
        using var translated = perUser.WithTranslatedKey<int>(id => $"user-{id}", leaveOpen: true);
        using var chained = PartitionedRateLimiter.CreateChained(translated, global.WithTranslatedKey<int>(id => "", leaveOpen: true));
        Assert.True(chained.AttemptAcquire(1, 2).IsAcquired);
        Assert.False(chained.AttemptAcquire(1).IsAcquired);
        Assert.False(perUser.AttemptAcquire("user-1").IsAcquired);
    }

    [Fact]
    public void Create_InvalidArguments_Throw()
    {
        Assert.Throws<ArgumentNullException>(() => PartitionedLimiter.CreateFixedWindow<int, int>(null!, _ => TwoPerMinute));
        Assert.Throws<ArgumentNullException>(() => PartitionedLimiter.CreateFixedWindow<int, int>(k => k, null!));
        Assert.Throws<ArgumentException>(() => PartitionedLimiter.CreateFixedWindow<int, int>(k => k, _ => TwoPerMinute, new() { MaxPartitions = 0 }));
        Assert.Throws<ArgumentException>(() => PartitionedLimiter.CreateFixedWindow<int, int>(k => k, _ => TwoPerMinute, new() { IdleEvictionInterval = TimeSpan.Zero }));
        Assert.Throws<ArgumentNullException>(() => PartitionedLimiter.CreateFixedWindow<int, int>(k => k, _ => TwoPerMinute, new() { TimeProvider = null! }));

        using var invalidTier = PartitionedLimiter.CreateFixedWindow<int, int>(k => k, _ => new FixedWindowRateLimiterOptions());
        Assert.Throws<ArgumentException>(() => invalidTier.AttemptAcquire(1));
    }

    [Fact]
    public async Task AttemptAcquire_NewKey_ReadsItsClockUnderTheShardsLock()
    {
        // A new key's request decides at the clock reading its entry is made with. Read before the shard's lock, a thread
        // stalled there could find the key missing only because another request had made, used and evicted its entry
        // meanwhile, and admit again in that entry's window. Read under the lock, a second request for the key waits.
        using var time = new GatedClock();
        var onePerSecond = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromSeconds(1), QueueLimit = 0 };
        using var limiter = PartitionedLimiter.CreateFixedWindow<string, string>(
            key => key, _ => onePerSecond, new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromDays(1) });

        Task<RateLimitLease> first = time.StallAtFirstClockRead(() => limiter.AttemptAcquire("k"));
        Task<RateLimitLease> second = Task.Run(() => limiter.AttemptAcquire("k"));
        Task waited = await Task.WhenAny(second, Task.Delay(TimeSpan.FromSeconds(1)));
        Assert.False(waited == second, "a second request decided while the first was making the key's entry");
        time.Open();

        // Once the entry is in, either may take the one permit first (a second request started late can win the CAS).
        Assert.True((await first).IsAcquired ^ (await second).IsAcquired);
    }

    [Fact]
    public async Task Sweep_KeyThatOnceQueued_EvictedWithItsWakeupTimerDisposed()
    {
        // A key that queued got a limiter of its own with a wake-up timer; eviction retired that limiter but kept the timer,
        // which a provider that holds its timers until disposed kept for every key that ever queued.
        var time = new TimerCountingClock();
        using PartitionedRateLimiter<string> limiter = SweptByHand(time);
        var diagnostics = (IPartitionDiagnostics)limiter;
        int timersWithWakeup = await QueueOnceThenIdle(limiter, time);
        diagnostics.SweepAllShards();
        Assert.Equal(0, diagnostics.PartitionCount);
        Assert.Equal(timersWithWakeup - 1, time.Live);
    }

    [Fact]
    public async Task Sweep_KeyThatOnceQueued_WhoseTimerThrowsOnDispose_IsStillRemoved()
    {
        // The eviction gives the key limiter's timer back once it stands; a provider whose timer throws on dispose made the
        // sweep leave the slot marked evicted and not removed, and every request for the key spun on the mark until the
        // shard's next sweep (a day here).
        var time = new TimerCountingClock();
        using PartitionedRateLimiter<string> limiter = SweptByHand(time);
        var diagnostics = (IPartitionDiagnostics)limiter;
        await QueueOnceThenIdle(limiter, time);
        time.ThrowOnDispose = true;
        diagnostics.SweepAllShards();
        time.ThrowOnDispose = false;

        Assert.Equal(0, diagnostics.PartitionCount);
        Task<bool> next = Task.Run(() => limiter.AttemptAcquire("k").IsAcquired);
        Assert.True(await next.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    /// <summary>Two permits a minute per key, on <paramref name="time"/>, swept only when a test says so.</summary>
    private static PartitionedRateLimiter<string> SweptByHand(TimeProvider time) => PartitionedLimiter.CreateFixedWindow<string, string>(
        key => key, _ => TwoPerMinute, new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromDays(1) });

    /// <summary>
    /// Key "k" queues once (so it gets a limiter of its own, with a wake-up timer), is served, then goes idle: its window is
    /// over. Returns the clock's live timers while the wake-up existed.
    /// </summary>
    private static async Task<int> QueueOnceThenIdle(PartitionedRateLimiter<string> limiter, TimerCountingClock time)
    {
        Assert.True(limiter.AttemptAcquire("k", 2).IsAcquired);
        ValueTask<RateLimitLease> queued = limiter.AcquireAsync("k");
        int timersWithWakeup = time.Live;
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True((await queued).IsAcquired);
        time.Advance(TimeSpan.FromMinutes(1));
        return timersWithWakeup;
    }

    /// <summary>A fake clock that counts its timers not yet disposed.</summary>
    private sealed class TimerCountingClock : Microsoft.Extensions.Time.Testing.FakeTimeProvider
    {
        private int _live;

        public int Live => Volatile.Read(ref _live);

        /// <summary>Whether a timer's dispose throws (after letting go), as a provider's may.</summary>
        public bool ThrowOnDispose { get; set; }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Interlocked.Increment(ref _live);
            return new Counted(base.CreateTimer(callback, state, dueTime, period), this);
        }

        private sealed class Counted(ITimer inner, TimerCountingClock owner) : ITimer
        {
            private int _disposed;

            public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(dueTime, period);

            public void Dispose()
            {
                if (Interlocked.Exchange(ref _disposed, 1) == 0)
                {
                    Interlocked.Decrement(ref owner._live);
                }

                inner.Dispose();
                if (owner.ThrowOnDispose)
                {
                    throw new InvalidOperationException("the provider's timer failed to let go");
                }
            }

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Probe_ThroughAKeyLimiterWhoseEntryWasEvicted_IsDecidedOnTheLiveEntry(bool async)
    {
        // A key that once queued answers through its key limiter. A probe that found that limiter, then stalled while an
        // eviction removed the (fresh) entry and the key came back and used its one permit, must not answer from the
        // removed entry's count ("available"): the key's live entry has nothing left, so AttemptAcquire refuses and
        // AcquireAsync waits for the next window, as on any exhausted key.
        using var time = new GatedClock();
        var oneASecond = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromSeconds(1), QueueLimit = 1 };
        using var limiter = PartitionedLimiter.CreateFixedWindow<string, string>(
            key => key, _ => oneASecond, new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromDays(1) });
        var diagnostics = (IPartitionDiagnostics)limiter;
        Assert.True(limiter.AttemptAcquire("k").IsAcquired);
        ValueTask<RateLimitLease> queued = limiter.AcquireAsync("k"); // the key's limiter is installed
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True((await queued).IsAcquired);
        time.Advance(TimeSpan.FromSeconds(1)); // the entry is fresh again: idle, so it may be evicted

        Task<ValueTask<RateLimitLease>> probe = time.StallAtFirstClockRead(
            () => async ? limiter.AcquireAsync("k", 0) : new ValueTask<RateLimitLease>(limiter.AttemptAcquire("k", 0)));
        diagnostics.SweepAllShards();
        Assert.Equal(0, diagnostics.PartitionCount);
        Assert.True(limiter.AttemptAcquire("k").IsAcquired);
        time.Open();

        ValueTask<RateLimitLease> answer = await probe;
        if (async)
        {
            Assert.False(answer.IsCompleted);
            time.Advance(TimeSpan.FromSeconds(1));
            Assert.True((await answer).IsAcquired);
        }
        else
        {
            Assert.False((await answer).IsAcquired);
        }

        RateLimiterStatistics statistics = limiter.GetStatistics("k")!;
        Assert.Equal(async ? 4 : 3, statistics.TotalSuccessfulLeases);
        Assert.Equal(async ? 0 : 1, statistics.TotalFailedLeases);
    }

    /// <summary>
    /// Four threads on twenty keys, each a log of 10 per 2 ms (5,000 a second): even a slow machine's calls pass that on
    /// every key, so the window check sees saturated windows and refusals, with sweeps racing the admissions.
    /// </summary>
    [Fact]
    public void AttemptAcquire_FourThreadsOnTwentySaturatedKeysWithoutBlocks_NoKeyEverExceedsItsWindow()
    {
        var spec = new LimiterSpec(LimiterKind.Log, Limit: 10, WindowTicks: TimeSpan.FromMilliseconds(2).Ticks);
        using PartitionedRateLimiter<int> limiter = spec.CreatePartitioned(TimeProvider.System);
        var diagnostics = (IPartitionDiagnostics)limiter;
        using var recorder = new KeyAdmissionRecorder(limiter);
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, thread =>
        {
            var random = new Random(thread);
            for (int i = 0; i < 500_000; i++)
            {
                recorder.Attempt(limiter, random.Next(20));
                if (i % 100_000 == 0)
                {
                    diagnostics.SweepAllShards(); // evictions race the admissions too
                }
            }
        });

        recorder.AssertEveryKeyKeptItsGuarantee(spec, keys: 20, leastRefused: 20_000);
    }
}
