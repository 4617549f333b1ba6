using System.Diagnostics;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Partitioning;
using RateEngine.Tests.Support;
using RateEngine.Timing;

namespace RateEngine.Tests.Partitioning;

/// <summary>Hot partition keys with per-core blocks (<see cref="PartitionedLimiterOptions.PerCoreReservation"/>).</summary>
public class PartitionHotKeyTests
{
    private static readonly FixedWindowRateLimiterOptions LargePerHour = new() { PermitLimit = 2_048, Window = TimeSpan.FromHours(1), QueueLimit = 8 };

    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void AttemptAcquire_BusyKey_IsPromotedAndKeepsItsLimitExactly()
    {
        using PartitionedRateLimiter<int> limiter = FixedWindow(LargePerHour, new PerCoreReservationOptions { Stripes = 4, HotKeySampling = 1 });
        var diagnostics = (IPartitionDiagnostics)limiter;

        for (int i = 0; i < LargePerHour.PermitLimit; i++)
        {
            Assert.True(limiter.AttemptAcquire(7).IsAcquired, $"permit {i}");
        }

        Assert.Equal(1, diagnostics.HotKeyCount);
        Assert.False(limiter.AttemptAcquire(7).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics(7)!.CurrentAvailablePermits);
        Assert.Equal(LargePerHour.PermitLimit, limiter.GetStatistics(7)!.TotalSuccessfulLeases);

        _time.Advance(LargePerHour.Window);
        Assert.True(limiter.AttemptAcquire(7, 2_048).IsAcquired); // the next window, all of it
    }

    [Fact]
    public void AttemptAcquire_ClockFailsAfterThePromotingAdmissionsRead_TheAdmissionStands()
    {
        // The admission is counted, then the key is promoted: the blocks' start read the clock again, and a provider that
        // threw there failed the admitted request (its permit spent, no lease, the statistics one ahead of the leases).
        var clock = new FailingClock();
        int calls = 0;
        using PartitionedRateLimiter<int> limiter = PartitionedLimiter.CreateFixedWindow<int, int>(
            key => key,
            _ => LargePerHour,
            new PartitionedLimiterOptions { TimeProvider = clock, PerCoreReservation = new PerCoreReservationOptions { Stripes = 4, HotKeySampling = 1, ChooseStripe = () => calls++ & 1 } });
        var diagnostics = (IPartitionDiagnostics)limiter;
        int admitted = 0;
        while (diagnostics.HotKeyCount == 0 && admitted < 1_000)
        {
            clock.FailAfter(1, 1); // the admission's own read goes through, any read after it fails
            using RateLimitLease lease = limiter.AttemptAcquire(7);
            clock.FailAfter(-1);
            Assert.True(lease.IsAcquired);
            admitted++;
        }

        Assert.Equal(1, diagnostics.HotKeyCount);
        Assert.Equal(admitted, limiter.GetStatistics(7)!.TotalSuccessfulLeases);
        Assert.Equal(LargePerHour.PermitLimit - admitted, limiter.GetStatistics(7)!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_KeyPromotedJustBeforeTheEpochsWrap_StillAdmitsItsWholeLimit()
    {
        // 1 ms windows, the key promoted 2^19 windows before window 2^33 (99 days in): an empty block left reading as window
        // 0 reads as a window ahead there, so no refill could install a block and each dropped its extra permit.
        var perMillisecond = new FixedWindowRateLimiterOptions { PermitLimit = 2_048, Window = TimeSpan.FromMilliseconds(1), QueueLimit = 0 };
        using PartitionedRateLimiter<int> limiter = FixedWindow(perMillisecond, new PerCoreReservationOptions { Stripes = 4, HotKeySampling = 1 });
        _time.Advance(TimeSpan.FromMilliseconds((1L << 33) - (1L << 19)));

        int admitted = 0;
        while (admitted <= perMillisecond.PermitLimit && limiter.AttemptAcquire(7).IsAcquired)
        {
            admitted++;
        }

        Assert.Equal(1, ((IPartitionDiagnostics)limiter).HotKeyCount);
        Assert.Equal(perMillisecond.PermitLimit, admitted);
    }

    [Fact]
    public void AttemptAcquire_FromABlock_IsStampedAtItsOwnTimeAndCountedInItsWindow()
    {
        using PartitionedRateLimiter<int> limiter = FixedWindow(LargePerHour, new PerCoreReservationOptions { HotKeySampling = 1 });
        var diagnostics = (IPartitionDiagnostics)limiter;
        var stamps = new List<(long Stamp, long Now)>();
        diagnostics.AdmissionObserver = (_, admission) => stamps.Add((admission.Stamp, diagnostics.Now()));

        // Promoted by its first requests (both processors, 16 votes); the blocks then grow as each runs out within the window.
        for (int i = 0; i < 1_000; i++)
        {
            Assert.True(limiter.AttemptAcquire(9).IsAcquired);
            _time.Advance(TimeSpan.FromTicks(7));
        }

        Assert.Equal(1, diagnostics.HotKeyCount);
        Assert.All(stamps, s => Assert.Equal(s.Now, s.Stamp)); // a block's permit is used now, not at its window's start
        Assert.Equal(LargePerHour.PermitLimit - 1_000, limiter.GetStatistics(9)!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_HotKeySuccess_AllocatesNothing()
    {
        var large = new FixedWindowRateLimiterOptions { PermitLimit = int.MaxValue, Window = TimeSpan.FromHours(1), QueueLimit = 0 };
        using PartitionedRateLimiter<int> limiter = FixedWindow(large, new PerCoreReservationOptions { HotKeySampling = 1 });
        for (int i = 0; i < 1_000; i++)
        {
            limiter.AttemptAcquire(4).Dispose(); // promoted, blocks grown, code warm
        }

        Assert.Equal(1, ((IPartitionDiagnostics)limiter).HotKeyCount);
        long allocated = Allocation.LeastOnThisThread(() =>
        {
            for (int i = 0; i < 10_000; i++)
            {
                limiter.AttemptAcquire(4).Dispose();
            }
        });

        Assert.Equal(0, allocated);
    }

    [Fact]
    public void AttemptAcquire_KeyEveryProcessorHits_IsPromotedAfterItsVotes_ManyEvenKeysAreNot()
    {
        // Default votes, every admission sampled, requests alternating between two processors.
        using PartitionedRateLimiter<int> one = FixedWindow(LargePerHour, new PerCoreReservationOptions { HotKeySampling = 1 });
        var diagnostics = (IPartitionDiagnostics)one;
        for (int i = 0; i < PartitionedLimiterOptions.HotKeyStreak - 1; i++)
        {
            Assert.True(one.AttemptAcquire(1).IsAcquired);
        }

        Assert.Equal(0, diagnostics.HotKeyCount); // the first sample takes the slot with one vote; each later one adds one
        Assert.True(one.AttemptAcquire(1).IsAcquired);
        Assert.Equal(1, diagnostics.HotKeyCount);

        // 4,097 keys visited in turn (an odd count, so each key's visits alternate between the processors): about 64 keys
        // share each slot, so no key ever holds a majority of its slot's samples.
        using PartitionedRateLimiter<int> many = FixedWindow(LargePerHour, new PerCoreReservationOptions { HotKeySampling = 1 });
        for (int i = 0; i < 20 * 4_097; i++)
        {
            Assert.True(many.AttemptAcquire(i % 4_097).IsAcquired);
        }

        Assert.Equal(0, ((IPartitionDiagnostics)many).HotKeyCount);
    }

    [Fact]
    public void AttemptAcquire_KeyOneProcessorUses_IsNeverPromoted()
    {
        using PartitionedRateLimiter<int> limiter = FixedWindow(LargePerHour, new PerCoreReservationOptions { HotKeySampling = 1, ChooseStripe = () => 0 });

        for (int i = 0; i < LargePerHour.PermitLimit; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        Assert.Equal(0, ((IPartitionDiagnostics)limiter).HotKeyCount);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_KeyBelowTheSmallestHotLimit_IsNeverPromoted()
    {
        var small = new FixedWindowRateLimiterOptions { PermitLimit = (int)PartitionedLimiterOptions.MinHotKeyLimit - 1, Window = TimeSpan.FromHours(1), QueueLimit = 0 };
        using PartitionedRateLimiter<int> limiter = FixedWindow(small, new PerCoreReservationOptions());

        for (int i = 0; i < small.PermitLimit; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        Assert.Equal(0, ((IPartitionDiagnostics)limiter).HotKeyCount);
    }

    [Fact]
    public void AttemptAcquire_ManyBusyKeys_AtMostMaxHotKeysArePromoted()
    {
        using PartitionedRateLimiter<int> limiter = FixedWindow(LargePerHour, new PerCoreReservationOptions { HotKeySampling = 1, HotKeyStreak = 1 });

        for (int key = 0; key < PartitionedLimiterOptions.MaxHotKeys + 100; key++)
        {
            Assert.True(limiter.AttemptAcquire(key).IsAcquired);
            Assert.True(limiter.AttemptAcquire(key).IsAcquired); // from the other processor: promoted
        }

        Assert.Equal(PartitionedLimiterOptions.MaxHotKeys, ((IPartitionDiagnostics)limiter).HotKeyCount);
        Assert.True(limiter.AttemptAcquire(PartitionedLimiterOptions.MaxHotKeys + 50, 2_046).IsAcquired); // a key left cold still works
    }

    [Fact]
    public void Sweep_IdleHotKey_IsEvictedAndNoLongerHot()
    {
        using PartitionedRateLimiter<int> limiter = FixedWindow(LargePerHour, new PerCoreReservationOptions { HotKeySampling = 1, HotKeyStreak = 1 });
        var diagnostics = (IPartitionDiagnostics)limiter;
        Assert.True(limiter.AttemptAcquire(3, 10).IsAcquired);
        Assert.True(limiter.AttemptAcquire(3, 10).IsAcquired); // another processor: promoted
        Assert.True(limiter.AttemptAcquire(3, 10).IsAcquired); // from the key's blocks now
        Assert.Equal(1, diagnostics.HotKeyCount);

        diagnostics.SweepAllShards();
        Assert.Equal(1, diagnostics.PartitionCount); // permits of this window are counted: not idle

        _time.Advance(LargePerHour.Window);
        diagnostics.SweepAllShards();
        Assert.Equal(0, diagnostics.PartitionCount);
        Assert.Equal(0, diagnostics.HotKeyCount);
        Assert.True(limiter.AttemptAcquire(3, 2_048).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_HotKeyOutOfPermits_QueuesAndIsServedInTheNextWindow()
    {
        using PartitionedRateLimiter<int> limiter = FixedWindow(LargePerHour, new PerCoreReservationOptions { HotKeySampling = 1, HotKeyStreak = 1 });
        var diagnostics = (IPartitionDiagnostics)limiter;
        Assert.True(limiter.AttemptAcquire(5).IsAcquired);
        Assert.True(limiter.AttemptAcquire(5).IsAcquired);
        Assert.Equal(1, diagnostics.HotKeyCount);
        Assert.True(limiter.AttemptAcquire(5, 2_046).IsAcquired);

        ValueTask<RateLimitLease> waiting = limiter.AcquireAsync(5, 4);
        Assert.False(waiting.IsCompleted);
        _time.Advance(LargePerHour.Window);

        using (RateLimitLease lease = await waiting)
        {
            Assert.True(lease.IsAcquired);
        }

        Assert.Equal(2_044, limiter.GetStatistics(5)!.CurrentAvailablePermits);

        // The key's limiter on its blocks is evicted once idle, and the key is no longer counted hot.
        _time.Advance(LargePerHour.Window);
        diagnostics.SweepAllShards();
        Assert.Equal(0, diagnostics.PartitionCount);
        Assert.Equal(0, diagnostics.HotKeyCount);
    }

    /// <summary>
    /// Four threads on ten hot keys on the real clock, with sweeps racing them: every key keeps its guarantee. The caps are
    /// low enough (8 permits per 500 µs, 16,000 a second, per key) that even a slow machine's calls (2 permits on average)
    /// pass them on every key, so most windows are saturated and the check sees refusals, not only admissions.
    /// </summary>
    [Theory]
    [InlineData(LimiterKind.Fixed)]
    [InlineData(LimiterKind.Counter)]
    [InlineData(LimiterKind.Bucket)]
    public void AttemptAcquire_FourThreadsOnTenHotKeys_NoKeyEverExceedsItsGuarantee(LimiterKind kind)
    {
        LimiterSpec spec = kind == LimiterKind.Bucket
            ? new LimiterSpec(kind, Limit: 8, WindowTicks: TimeSpan.FromMicroseconds(100).Ticks, TokensPerPeriod: 2)
            : new LimiterSpec(kind, Limit: 8, WindowTicks: TimeSpan.FromMicroseconds(500).Ticks, Segments: 4);
        // Each thread has its own block (and counts as its own processor), so keys are promoted however the scheduler
        // places the threads on a busy machine; the blocks are shared by CAS all the same.
        using PartitionedRateLimiter<int> limiter = spec.CreatePartitioned(
            TimeProvider.System,
            hotKeys: new PerCoreReservationOptions { MaxBlockSize = 16, Stripes = 4, HotKeyLimitFloor = 1, HotKeySampling = 1, HotKeyStreak = 1, ChooseStripe = () => Environment.CurrentManagedThreadId });
        var diagnostics = (IPartitionDiagnostics)limiter;
        using var recorder = new KeyAdmissionRecorder(limiter);
        int mostHot = 0;
        // Four threads of their own (a parallel loop may run its iterations one after another on one thread).
        Thread[] threads = [.. Enumerable.Range(0, 4).Select(seed => new Thread(() =>
        {
            var random = new Random(seed);
            for (int i = 0; i < 250_000; i++)
            {
                recorder.Attempt(limiter, random.Next(10), 1 + (i % 3));

                if (i % 50_000 == 49_999)
                {
                    InterlockedMax(ref mostHot, diagnostics.HotKeyCount);
                    diagnostics.SweepAllShards(); // evictions race the blocks too
                }
            }
        }))];
        foreach (Thread thread in threads)
        {
            thread.Start();
        }

        foreach (Thread thread in threads)
        {
            thread.Join();
        }

        Assert.True(mostHot > 0, "no key was promoted");
        recorder.AssertEveryKeyKeptItsGuarantee(spec, keys: 10, leastRefused: 10_000);

        static void InterlockedMax(ref int target, int value)
        {
            int seen;
            while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
            {
            }
        }
    }

    [Fact]
    public void Create_SlidingWindowLogWithPerCoreReservation_Throws()
    {
        var log = new SlidingWindowLogRateLimiterOptions { PermitLimit = 2_048, Window = TimeSpan.FromMinutes(1) };
        Assert.Throws<ArgumentException>(() => PartitionedLimiter.CreateSlidingWindowLog<int, int>(
            key => key, _ => log, new PartitionedLimiterOptions { PerCoreReservation = new PerCoreReservationOptions() }));
        Assert.Throws<ArgumentOutOfRangeException>(() => PartitionedLimiter.CreateFixedWindow<int, int>(
            key => key, _ => LargePerHour, new PartitionedLimiterOptions { PerCoreReservation = new PerCoreReservationOptions { MaxBlockSize = 0 } }));
        PartitionedLimiter.CreateSlidingWindowLog<int, int>( // blocks of 1 are no blocks: accepted
            key => key, _ => log, new PartitionedLimiterOptions { PerCoreReservation = new PerCoreReservationOptions { MaxBlockSize = 1 } }).Dispose();
    }

    /// <summary>
    /// A fixed window per key on the fake clock, whose requests (unless a test chose otherwise) come from two processors
    /// in turn, as two threads on two cores would: one thread alone never makes a key hot.
    /// </summary>
    private PartitionedRateLimiter<int> FixedWindow(FixedWindowRateLimiterOptions options, PerCoreReservationOptions perCore)
    {
        int calls = 0;
        perCore.ChooseStripe ??= () => calls++ & 1;
        return PartitionedLimiter.CreateFixedWindow<int, int>(key => key, _ => options, new PartitionedLimiterOptions { TimeProvider = _time, PerCoreReservation = perCore });
    }
}
