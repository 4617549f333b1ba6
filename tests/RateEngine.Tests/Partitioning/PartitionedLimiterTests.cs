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
    private static readonly FixedWindowRateLimiterOptions TwoPerMinute = new() { PermitLimit = 2, Window = TimeSpan.FromMinutes(1), QueueLimit = 4 };

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
    public void AttemptAcquire_FourThreadsOnAThousandHotKeys_NoKeyEverExceedsItsWindow()
    {
        var spec = new LimiterSpec(LimiterKind.Log, Limit: 50, WindowTicks: TimeSpan.FromMilliseconds(2).Ticks);
        using PartitionedRateLimiter<int> limiter = spec.CreatePartitioned(TimeProvider.System);
        var diagnostics = (IPartitionDiagnostics)limiter;
        var recorded = new ThreadLocal<List<(int Key, Admitted Admitted)>>(() => [], trackAllValues: true);
        diagnostics.AdmissionObserver = (key, admission) => recorded.Value!.Add(((int)key, new Admitted(admission.Stamp, admission.Permits)));
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, thread =>
        {
            var random = new Random(thread);
            for (int i = 0; i < 500_000; i++)
            {
                limiter.AttemptAcquire(random.Next(1_000)).Dispose();
                if (i % 100_000 == 0)
                {
                    diagnostics.SweepAllShards(); // evictions race the admissions too
                }
            }
        });

        var byKey = recorded.Values.SelectMany(list => list).GroupBy(r => r.Key).ToList();
        Assert.True(byKey.Count > 900);
        var inClockTicks = spec with { WindowTicks = TimeMath.ToTicks(TimeSpan.FromTicks(spec.WindowTicks), Stopwatch.Frequency) };
        foreach (var key in byKey)
        {
            Assert.Null(Guarantee.FindViolation(inClockTicks, key.Select(r => r.Admitted).ToList()));
        }
    }
}
