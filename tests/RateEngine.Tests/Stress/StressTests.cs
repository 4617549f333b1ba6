using System.Diagnostics;
using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Tests.Support;
using RateEngine.Timing;
using Xunit.Abstractions;

namespace RateEngine.Tests.Stress;

/// <summary>
/// Several threads hammer one limiter on the real clock; every admission's decision stamp is recorded and the window
/// invariant is checked offline afterwards. A third of the admissions is refunded at once, racing the others, so the
/// refund paths are hammered too; refunded admissions are dropped from the record only when the refund says it freed.
/// </summary>
public class StressTests(ITestOutputHelper output)
{
    private const int Threads = 4;
    private const int AttemptsPerThread = 1_000_000;

    [Fact]
    public void SlidingWindowLog_FourThreadsFourMillionAttempts_NeverExceedsLimitInAnyWindow() =>
        Hammer(new LimiterSpec(LimiterKind.Log, Limit: 1_000, WindowTicks: TimeSpan.FromMilliseconds(1).Ticks));

    /// <summary>
    /// A clock that advances with every read and a window of a few dozen reads: nearly every decision sits next to a
    /// window edge and races a refund of the admission before it. This is where refund/acquire ABA shows.
    /// </summary>
    [Theory]
    [InlineData(LimiterKind.Log)]
    [InlineData(LimiterKind.Counter)]
    [InlineData(LimiterKind.Fixed)]
    [InlineData(LimiterKind.Bucket)]
    public void AnyLimiter_FourThreadsOnARacingClockHalfRefunded_NeverExceedsGuarantee(LimiterKind kind)
    {
        // The races are rare per attempt: several fresh rounds make a regression show up in most CI runs.
        for (int round = 0; round < 4; round++)
        {
            Hammer(new LimiterSpec(kind, Limit: 2, WindowTicks: 40, Segments: 2, TokensPerPeriod: 1), refundOneIn: 2, new CountingTimeProvider());
        }
    }

    /// <summary>
    /// The coarse clock (<see cref="CoarseTimeProvider"/>, its real 1 ms ticker): stamps are its cached timestamp, many
    /// decisions share one, and every window roll-over happens at a tick racing the deciding threads.
    /// </summary>
    [Theory]
    [InlineData(LimiterKind.Log)]
    [InlineData(LimiterKind.Counter)]
    [InlineData(LimiterKind.Fixed)]
    [InlineData(LimiterKind.Bucket)]
    public void AnyLimiter_FourThreadsOnTheCoarseClock_NeverExceedsGuarantee(LimiterKind kind)
    {
        using var coarse = new CoarseTimeProvider();
        Hammer(CoarseSpec(kind), refundOneIn: 3, coarse);
    }

    /// <summary>
    /// A coarse clock whose ticker stalls now and then for up to 20 ms and then jumps to the real time in one tick,
    /// racing the deciding threads: the stall only freezes time, the jump must not let a window admit past its limit.
    /// </summary>
    [Theory]
    [InlineData(LimiterKind.Log)]
    [InlineData(LimiterKind.Counter)]
    [InlineData(LimiterKind.Fixed)]
    [InlineData(LimiterKind.Bucket)]
    public void AnyLimiter_FourThreadsOnACoarseClockThatStallsAndJumps_NeverExceedsGuarantee(LimiterKind kind)
    {
        using var coarse = new CoarseTimeProvider(TimeSpan.FromMilliseconds(1), source: null, manual: true);
        using var stop = new CancellationTokenSource();
        var ticker = new Thread(() =>
        {
            var random = new Random(13);
            while (!stop.IsCancellationRequested)
            {
                Thread.Sleep(random.Next(8) == 0 ? random.Next(5, 21) : 1);
                coarse.Tick();
            }
        }) { IsBackground = true };
        ticker.Start();
        try
        {
            // A run lasts a few hundred ticks and sees only a few stalls: several fresh rounds see more jumps.
            for (int round = 0; round < 3; round++)
            {
                Hammer(CoarseSpec(kind), refundOneIn: 3, coarse);
            }
        }
        finally
        {
            stop.Cancel();
            ticker.Join();
        }
    }

    /// <summary>Windows of a few ticks of the coarse clock, so that a run crosses hundreds of them.</summary>
    private static LimiterSpec CoarseSpec(LimiterKind kind) => kind switch
    {
        LimiterKind.Log => new LimiterSpec(kind, Limit: 1_000, WindowTicks: TimeSpan.FromMilliseconds(5).Ticks),
        LimiterKind.Counter => new LimiterSpec(kind, Limit: 1_000, WindowTicks: TimeSpan.FromMilliseconds(5).Ticks, Segments: 5),
        LimiterKind.Fixed => new LimiterSpec(kind, Limit: 500, WindowTicks: TimeSpan.FromMilliseconds(3).Ticks),
        _ => new LimiterSpec(kind, Limit: 200, WindowTicks: TimeSpan.FromMilliseconds(1).Ticks, TokensPerPeriod: 100),
    };

    [Fact]
    public void SlidingWindowCounter_FourThreadsFourMillionAttempts_NeverExceedsLimitInAnyWindow() =>
        Hammer(new LimiterSpec(LimiterKind.Counter, Limit: 1_000, WindowTicks: TimeSpan.FromMilliseconds(1).Ticks, Segments: 4));

    [Fact]
    public void FixedWindow_FourThreadsFourMillionAttempts_NeverExceedsLimitInAnyAlignedWindow() =>
        Hammer(new LimiterSpec(LimiterKind.Fixed, Limit: 500, WindowTicks: TimeSpan.FromMicroseconds(500).Ticks));

    [Fact]
    public void TokenBucket_FourThreadsFourMillionAttempts_NeverExceedsBurstPlusRate() =>
        Hammer(new LimiterSpec(LimiterKind.Bucket, Limit: 200, WindowTicks: TimeSpan.FromMicroseconds(100).Ticks, TokensPerPeriod: 100));

    /// <summary>
    /// Per-core blocks (<see cref="PerCoreReservationOptions"/>): four threads on two cores take permits from their cores'
    /// blocks, refill them from the shared state and take from each other's when it is out, on the real clock with
    /// windows of half a millisecond, so blocks end with their window all the time; a third is refunded into the blocks.
    /// </summary>
    [Theory]
    [InlineData(LimiterKind.Log, 64)]
    [InlineData(LimiterKind.Log, 4)]
    [InlineData(LimiterKind.Fixed, 64)]
    [InlineData(LimiterKind.Fixed, 4)]
    [InlineData(LimiterKind.Counter, 64)]
    [InlineData(LimiterKind.Counter, 4)]
    [InlineData(LimiterKind.Bucket, 64)]
    [InlineData(LimiterKind.Bucket, 4)]
    public void PerCore_FourThreadsFourMillionAttempts_NeverExceedsGuarantee(LimiterKind kind, int block) =>
        Hammer(kind == LimiterKind.Bucket
            ? new LimiterSpec(kind, Limit: 200, WindowTicks: TimeSpan.FromMicroseconds(100).Ticks, TokensPerPeriod: 100, PerCoreBlock: block)
            : new LimiterSpec(kind, Limit: 500, WindowTicks: TimeSpan.FromMicroseconds(500).Ticks, Segments: 4, PerCoreBlock: block));

    /// <summary>Per-core blocks on a clock that moves with every few reads: every block races its window's end (a bucket's, its tokens' slots).</summary>
    [Theory]
    [InlineData(LimiterKind.Log)]
    [InlineData(LimiterKind.Fixed)]
    [InlineData(LimiterKind.Counter)]
    [InlineData(LimiterKind.Bucket)]
    public void PerCore_FourThreadsOnARacingClockHalfRefunded_NeverExceedsGuarantee(LimiterKind kind)
    {
        for (int round = 0; round < 4; round++)
        {
            // The log's blocks live 1/256 of its window: 1,024 ticks give periods of 4, so its span is widened by 6.
            long window = kind == LimiterKind.Log ? 1_024 : 40;
            Hammer(new LimiterSpec(kind, Limit: 40, WindowTicks: window, Segments: 2, PerCoreBlock: 8), refundOneIn: 2, new CountingTimeProvider());
        }
    }

    /// <summary>Per-core blocks on the coarse clock (its real 1 ms ticker).</summary>
    [Theory]
    [InlineData(LimiterKind.Log)]
    [InlineData(LimiterKind.Fixed)]
    [InlineData(LimiterKind.Counter)]
    [InlineData(LimiterKind.Bucket)]
    public void PerCore_FourThreadsOnTheCoarseClock_NeverExceedsGuarantee(LimiterKind kind)
    {
        using var coarse = new CoarseTimeProvider();
        Hammer(CoarseSpec(kind) with { PerCoreBlock = 64 }, refundOneIn: 3, coarse);
    }

    [Fact]
    public void Reservation_TwoThreadsRefundEveryReservation_EachIsRefundedOnce()
    {
        const int Reservations = 200_000;
        using var limiter = (RateEngineLimiter)new LimiterSpec(LimiterKind.Fixed, Limit: int.MaxValue, WindowTicks: TimeSpan.FromDays(1).Ticks)
            .Create(TimeProvider.System);
        var reservations = new RateEngineLimiter.Reservation[Reservations];
        for (int i = 0; i < Reservations; i++)
        {
            Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation));
            reservations[i] = reservation;
        }

        var refundedBy = new int[Reservations];
        using var start = new Barrier(2);
        Thread[] threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < Reservations; i++)
            {
                int index = t == 0 ? i : Reservations - 1 - i; // one from each end, so they meet in the middle and race
                if (reservations[index].Refund())
                {
                    Interlocked.Increment(ref refundedBy[index]);
                }
            }
        })).ToArray();
        foreach (Thread thread in threads)
        {
            thread.Start();
        }

        foreach (Thread thread in threads)
        {
            thread.Join();
        }

        Assert.All(refundedBy, count => Assert.InRange(count, 0, 1));
        long refunded = refundedBy.Sum();
        Assert.True(refunded > Reservations / 2, "the fixed window refunds exactly within its window, so most should come back");
        Assert.Equal(int.MaxValue - (Reservations - refunded), limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    /// <summary>
    /// <c>AttemptAcquire</c>, the public path each sealed limiter compiles for its own host (and where a single limiter
    /// counts its successes beside its state), from four threads: every admission the observer sees is checked against
    /// the window invariant, and the statistics must count exactly the leases the threads were granted.
    /// </summary>
    [Theory]
    [InlineData(LimiterKind.Log, 0)]
    [InlineData(LimiterKind.Counter, 0)]
    [InlineData(LimiterKind.Fixed, 0)]
    [InlineData(LimiterKind.Bucket, 0)]
    [InlineData(LimiterKind.Log, 16)]
    [InlineData(LimiterKind.Counter, 16)]
    [InlineData(LimiterKind.Fixed, 16)]
    [InlineData(LimiterKind.Bucket, 16)]
    public void AnyLimiter_FourThreadsThroughAttemptAcquire_NeverExceedsGuaranteeAndCountsEveryLease(LimiterKind kind, int perCoreBlock)
    {
        const int Attempts = 250_000;
        LimiterSpec spec = CoarseSpec(kind) with { PerCoreBlock = perCoreBlock };
        using RateEngineLimiter limiter = spec.Create(TimeProvider.System);
        var admissions = new System.Collections.Concurrent.ConcurrentQueue<Admitted>();

        // The window check reads the stamps, so they must not be taken on trust: each lies between the call's clock read and
        // a read after it, give or take what the design allows (a log's blocks are used within a block period of their
        // decision), or a block used after its period, stamped in it, would pass the check.
        long slack = kind == LimiterKind.Log && perCoreBlock > 0 ? TimeMath.ToTicks(TimeSpan.FromTicks(spec.WindowTicks), Stopwatch.Frequency) / 256 : 0;
        using var callStart = new ThreadLocal<long>();
        long misstamped = 0;
        limiter.AdmissionObserver = admission =>
        {
            if (admission.Stamp < callStart.Value - slack || admission.Stamp > limiter.Clock.Now() + slack)
            {
                Interlocked.Increment(ref misstamped);
            }

            admissions.Enqueue(new Admitted(admission.Stamp, admission.Permits));
        };
        long granted = 0;
        using var start = new Barrier(Threads);
        Thread[] threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            var random = new Random(t);
            long mine = 0;
            start.SignalAndWait();
            for (int i = 0; i < Attempts; i++)
            {
                callStart.Value = limiter.Clock.Now();
                using RateLimitLease lease = limiter.AttemptAcquire(random.Next(8) == 0 ? random.Next(1, 4) : 1);
                mine += lease.IsAcquired ? 1 : 0;
            }

            Interlocked.Add(ref granted, mine);
        })).ToArray();

        foreach (Thread thread in threads)
        {
            thread.Start();
        }

        foreach (Thread thread in threads)
        {
            thread.Join();
        }

        RateLimiterStatistics statistics = limiter.GetStatistics()!;
        output.WriteLine($"{kind}, blocks of {perCoreBlock}: {granted:N0} of {Threads * Attempts:N0} attempts admitted");
        Assert.Equal(granted, admissions.Count);
        Assert.Equal(granted, statistics.TotalSuccessfulLeases);
        Assert.Equal((long)Threads * Attempts, statistics.TotalSuccessfulLeases + statistics.TotalFailedLeases);
        Assert.True(statistics.TotalFailedLeases > 1_000, "the run never hit the limit, so it checked nothing");
        Assert.Equal(0, Interlocked.Read(ref misstamped));
        var inClockTicks = spec with { WindowTicks = TimeMath.ToTicks(TimeSpan.FromTicks(spec.WindowTicks), Stopwatch.Frequency) };
        Assert.Null(Guarantee.FindViolation(inClockTicks, admissions.ToList()));
    }

    /// <summary>
    /// <c>AutoReplenishment = false</c>: time moves only when <c>TryReplenish</c> says so (a fixed window's or a counter's
    /// step, at most one a window or segment; a bucket's credit of the time elapsed), called from a fifth thread all along
    /// while four threads acquire and refund. The stamps are the manual clock's, so the windows are checked in its units.
    /// </summary>
    [Theory]
    [InlineData(LimiterKind.Counter, 0)]
    [InlineData(LimiterKind.Fixed, 0)]
    [InlineData(LimiterKind.Bucket, 0)]
    [InlineData(LimiterKind.Counter, 64)]
    [InlineData(LimiterKind.Fixed, 64)]
    [InlineData(LimiterKind.Bucket, 64)]
    public void Manual_FourThreadsWhileAFifthReplenishes_NeverExceedsGuarantee(LimiterKind kind, int perCoreBlock)
    {
        LimiterSpec spec = kind switch
        {
            LimiterKind.Counter => new LimiterSpec(kind, Limit: 1_000, WindowTicks: TimeSpan.FromMilliseconds(1).Ticks, Segments: 4),
            LimiterKind.Fixed => new LimiterSpec(kind, Limit: 500, WindowTicks: TimeSpan.FromMicroseconds(500).Ticks),
            _ => new LimiterSpec(kind, Limit: 200, WindowTicks: TimeSpan.FromMicroseconds(100).Ticks, TokensPerPeriod: 100),
        } with { Manual = true, PerCoreBlock = perCoreBlock };

        // A step counts one window (fixed) or one segment (counter) of the manual clock; a bucket's clock counts the
        // provider's ticks it was credited.
        LimiterSpec checkedAs = kind switch
        {
            LimiterKind.Fixed => spec with { WindowTicks = 1 },
            LimiterKind.Counter => spec with { WindowTicks = spec.Segments },
            _ => spec with { WindowTicks = TimeMath.ToTicks(TimeSpan.FromTicks(spec.WindowTicks), TimeProvider.System.TimestampFrequency) },
        };
        Hammer(spec, refundOneIn: 3, TimeProvider.System, checkedAs);
    }

    private void Hammer(LimiterSpec spec, int refundOneIn = 3, TimeProvider? time = null, LimiterSpec? checkedAs = null)
    {
        time ??= TimeProvider.System;
        using RateEngineLimiter limiter = spec.Create(time);
        using var stopReplenishing = new CancellationTokenSource();
        long replenished = 0;
        var replenisher = new Thread(() =>
        {
            while (!stopReplenishing.IsCancellationRequested)
            {
                long before = limiter.Clock.Now();
                limiter.TryReplenish();
                if (limiter.Clock.Now() != before)
                {
                    Interlocked.Increment(ref replenished);
                }

                Thread.SpinWait(200);
            }
        }) { IsBackground = true };
        if (spec.Manual)
        {
            replenisher.Start();
        }

        var perThread = new List<Admitted>[Threads];
        long refunded = 0;
        long misstamped = 0;
        long refundedTwice = 0;
        using var start = new Barrier(Threads);
        Thread[] threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            var admitted = perThread[t] = new List<Admitted>(AttemptsPerThread);
            var random = new Random(t);
            start.SignalAndWait();
            for (int i = 0; i < AttemptsPerThread; i++)
            {
                int permits = spec.Limit <= 3 ? random.Next(1, spec.Limit + 1) : random.Next(10) == 0 ? random.Next(1, 4) : 1;
                long before = limiter.Clock.Now();
                if (!limiter.TryReserve(before, permits, out RateEngineLimiter.Reservation? reservation))
                {
                    continue;
                }

                // The window check below reads the stamps, so they must not be taken on trust: each lies between the
                // call's clock read and a read after it (a stamp in a window that is over would pass the check).
                long stamp = reservation.Admission.Stamp;
                if (stamp < before || stamp > limiter.Clock.Now())
                {
                    Interlocked.Increment(ref misstamped);
                }

                admitted.Add(new Admitted(stamp, reservation.Admission.Permits));
                if (random.Next(refundOneIn) == 0 && reservation.Refund())
                {
                    admitted.RemoveAt(admitted.Count - 1);
                    Interlocked.Increment(ref refunded);

                    // Counted, and asserted on the test's thread: an assertion that fails on a thread of its own ends the test
                    // host without naming the test.
                    if (reservation.Refund())
                    {
                        Interlocked.Increment(ref refundedTwice);
                    }
                }
            }
        })).ToArray();

        var stopwatch = Stopwatch.StartNew();
        foreach (Thread thread in threads)
        {
            thread.Start();
        }

        foreach (Thread thread in threads)
        {
            thread.Join();
        }

        stopwatch.Stop();
        if (spec.Manual)
        {
            stopReplenishing.Cancel();
            replenisher.Join();
            Assert.True(Interlocked.Read(ref replenished) > 10, $"time moved {replenished} times: the manual clock was not exercised");
        }

        List<Admitted> all = perThread.SelectMany(list => list).ToList();
        long successes = all.Count + refunded;
        output.WriteLine(
            $"{spec.Kind}: {Threads * AttemptsPerThread:N0} attempts in {stopwatch.ElapsedMilliseconds} ms, " +
            $"{successes:N0} admitted, {refunded:N0} of them refunded, {all.Sum(a => (long)a.Permits):N0} permits kept");

        RateLimiterStatistics statistics = limiter.GetStatistics()!;
        Assert.Equal(successes, statistics.TotalSuccessfulLeases);
        Assert.Equal((long)Threads * AttemptsPerThread, statistics.TotalSuccessfulLeases + statistics.TotalFailedLeases);
        Assert.True(all.Count > 500, "the run admitted too little to say anything");
        Assert.True(statistics.TotalFailedLeases > 1_000, "the run never hit the limit, so it checked nothing");
        Assert.Equal(0, Interlocked.Read(ref misstamped));
        Assert.Equal(0, Interlocked.Read(ref refundedTwice)); // a reservation refunded twice

        // The stamps are in the limiter's clock ticks (the provider's frequency): convert the spec's windows to them.
        var inClockTicks = checkedAs ?? spec with { WindowTicks = TimeMath.ToTicks(TimeSpan.FromTicks(spec.WindowTicks), time.TimestampFrequency) };
        Assert.Null(Guarantee.FindViolation(inClockTicks, all));
    }

    /// <summary>A clock that moves one tick every four reads, shared by all threads: time races the decisions.</summary>
    private sealed class CountingTimeProvider : TimeProvider
    {
        private long _reads;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Interlocked.Increment(ref _reads) / 4;
    }
}
