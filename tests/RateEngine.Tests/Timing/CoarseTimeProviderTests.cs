using System.Diagnostics;
using System.Threading.RateLimiting;
using RateEngine.Tests.Policies;
using RateEngine.Tests.Support;
using RateEngine.Timing;

namespace RateEngine.Tests.Timing;

/// <summary>
/// <see cref="CoarseTimeProvider"/>: the cached clock on its real ticker thread (eventual, generously bounded checks; no
/// timing assertion), and on a manual ticker that a test stalls and resumes to show that a stall only makes limiters
/// stricter and a catch-up jump admits no more than the window invariant allows.
/// </summary>
public class CoarseTimeProviderTests
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(10);

    public static TheoryData<LimiterKind> Kinds => new() { LimiterKind.Log, LimiterKind.Counter, LimiterKind.Fixed, LimiterKind.Bucket };

    // ---------------------------------------------------------------------------------------------------------------
    // The real ticker

    [Fact]
    public void GetTimestamp_TwoThreadsReading_NeverDecreasesAndNeverRunsAheadOfStopwatch()
    {
        using var coarse = new CoarseTimeProvider();
        long deadline = Stopwatch.GetTimestamp() + (Stopwatch.Frequency / 5); // 200 ms of reads
        long giveUp = deadline + (long)(Generous.TotalSeconds * Stopwatch.Frequency); // or longer, until it has moved
        int[] advances = new int[2];
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>(); // asserted on the test's thread, which names the test
        Thread[] readers = Enumerable.Range(0, 2).Select(r => new Thread(() =>
        {
            long previous = coarse.GetTimestamp();
            while (Stopwatch.GetTimestamp() is long time && (time < deadline || (advances[r] == 0 && time < giveUp)))
            {
                long now = coarse.GetTimestamp();
                long precise = Stopwatch.GetTimestamp();
                if (now < previous)
                {
                    failures.Enqueue($"the cached clock went back from {previous} to {now}");
                }

                if (now > precise)
                {
                    failures.Enqueue("the cached clock ran ahead of the Stopwatch read after it");
                }
                advances[r] += now > previous ? 1 : 0;
                previous = now;
            }
        })).ToArray();

        foreach (Thread reader in readers)
        {
            reader.Start();
        }

        foreach (Thread reader in readers)
        {
            reader.Join();
        }

        Assert.Empty(failures);
        Assert.True(advances.All(count => count > 0), "the cached clock never moved");
    }

    [Fact]
    public void GetTimestamp_Running_KeepsAdvancingWithRealTime()
    {
        using var coarse = new CoarseTimeProvider(TimeSpan.FromMilliseconds(1));
        long start = coarse.GetTimestamp();
        long target = start + ManualTicks.ToTimestamp(TimeSpan.FromMilliseconds(50));

        // Eventually, not on time: it must cover 50 ms of Stopwatch time within a generous deadline, however loaded the machine.
        Assert.True(SpinUntil(() => coarse.GetTimestamp() >= target), "the cached clock stopped advancing");
        Assert.Equal(TimeSpan.FromMilliseconds(1), coarse.Resolution);
        Assert.Equal(Stopwatch.Frequency, coarse.TimestampFrequency);
    }

    [Fact]
    public void GetTimestamp_NotYetRead_StartsNoThreadUntilTheFirstRead()
    {
        using var coarse = new CoarseTimeProvider();

        Assert.False(coarse.IsTicking);
        long first = coarse.GetTimestamp();

        Assert.True(coarse.IsTicking);
        Assert.True(first > 0);
        Assert.True(first <= Stopwatch.GetTimestamp());
    }

    [Fact]
    public void Dispose_Owned_StopsTheThreadAndTimeStandsStill()
    {
        var coarse = new CoarseTimeProvider();
        coarse.GetTimestamp();

        coarse.Dispose();
        Assert.False(coarse.IsTicking);

        // A tick in flight may still land; after that the clock never moves again.
        Thread.Sleep(20);
        long stopped = coarse.GetTimestamp();
        Thread.Sleep(50);
        Assert.Equal(stopped, coarse.GetTimestamp());
    }

    [Fact]
    public void Dispose_BeforeTheFirstRead_NeverStartsTheThread()
    {
        var coarse = new CoarseTimeProvider();
        coarse.Dispose();

        long first = coarse.GetTimestamp();

        Assert.True(first > 0);
        Assert.False(coarse.IsTicking);
        Thread.Sleep(20);
        Assert.Equal(first, coarse.GetTimestamp());
    }

    [Fact]
    public void Dispose_Shared_KeepsTicking()
    {
        CoarseTimeProvider shared = CoarseTimeProvider.Shared;
        long before = shared.GetTimestamp();

        shared.Dispose();

        Assert.True(shared.IsTicking);
        long target = before + ManualTicks.ToTimestamp(TimeSpan.FromMilliseconds(10));
        Assert.True(SpinUntil(() => shared.GetTimestamp() >= target), "the shared clock stopped after Dispose");
        Assert.Equal(CoarseTimeProvider.DefaultResolution, shared.Resolution);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.5)]
    [InlineData(-1.0)]
    [InlineData(1_001.0)]
    public void Constructor_ResolutionOutOfRange_Throws(double milliseconds)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new CoarseTimeProvider(TimeSpan.FromMilliseconds(milliseconds)));
        Assert.Equal("resolution", error.ParamName);

        // The half-built provider is finalized without its ticker: that must not crash the process.
        GC.Collect();
        GC.WaitForPendingFinalizers();
    }

    [Theory]
    [InlineData(1.0, 1)]
    [InlineData(1.5, 2)]
    [InlineData(1_000.0, 1_000)]
    public void Constructor_Resolution_RoundedUpToWholeMilliseconds(double milliseconds, int expected)
    {
        using var coarse = new CoarseTimeProvider(TimeSpan.FromMilliseconds(milliseconds));
        Assert.Equal(TimeSpan.FromMilliseconds(expected), coarse.Resolution);
    }

    [Fact]
    public void GetUtcNow_StandsStillAndMovesWithTheTimestamp()
    {
        var source = new ManualTicks(TimeSpan.FromSeconds(1));
        using CoarseTimeProvider coarse = source.CreateProvider();
        DateTimeOffset first = coarse.GetUtcNow();
        DateTimeOffset system = TimeProvider.System.GetUtcNow();

        Assert.Equal(TimeSpan.Zero, first.Offset);
        Assert.InRange(system - first, TimeSpan.Zero, Generous);

        Thread.Sleep(20);
        source.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(first, coarse.GetUtcNow()); // no tick: neither clock moves

        coarse.Tick();
        Assert.True(coarse.GetUtcNow() > first);
    }

    [Fact]
    public async Task CreateTimer_WaitsRealTimeOnTheSystemTimer()
    {
        var source = new ManualTicks(TimeSpan.FromSeconds(1));
        using CoarseTimeProvider coarse = source.CreateProvider(); // a clock that never ticks
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        using ITimer timer = coarse.CreateTimer(_ => fired.TrySetResult(), null, TimeSpan.FromMilliseconds(1), Timeout.InfiniteTimeSpan);

        await fired.Task.WaitAsync(Generous);
        Assert.Same(TimeProvider.System.LocalTimeZone, coarse.LocalTimeZone);
    }

    /// <summary>The README's "Choosing a clock" lines, as written there: a limiter, a partitioned limiter and a policy.</summary>
    [Fact]
    public void Readme_ChoosingAClock_EveryKindOfLimiterTakesIt()
    {
        var options = new FixedWindowRateLimiterOptions { PermitLimit = 2, Window = TimeSpan.FromMinutes(1) };
        var builder = new RatePolicyBuilder<Call>().AddLayer("user", c => c.User, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 2));

        var limiter = new LockFreeFixedWindowRateLimiter(options, CoarseTimeProvider.Shared);
        var perKey = PartitionedLimiter.CreateFixedWindow<string, string>(key => key, _ => options,
            new PartitionedLimiterOptions { TimeProvider = CoarseTimeProvider.Shared });
        builder.UseTimeProvider(CoarseTimeProvider.Shared);

        using (limiter)
        using (perKey)
        using (RatePolicy<Call> policy = builder.Build())
        {
            Assert.Equal([true, true, false], Enumerable.Range(0, 3).Select(_ => limiter.AttemptAcquire(1).IsAcquired));
            Assert.Equal([true, true, false], Enumerable.Range(0, 3).Select(_ => perKey.AttemptAcquire("alice", 1).IsAcquired));
            Assert.Equal([true, true, false], Enumerable.Range(0, 3).Select(_ => policy.Acquire(new Call("alice")).IsAcquired));
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // A stalled ticker, then a catch-up jump

    /// <summary>
    /// Ten seconds of real time pass under a 1-second window while the ticker is stalled: the limiter admits one window's
    /// limit and nothing more (stricter). Then one tick jumps the clock ten seconds at once: it admits one more limit,
    /// not the ten that real time would have allowed, and every stamp keeps the window invariant.
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void Limiter_TickerStalledThenCaughtUp_AdmitsOneLimitEachAndKeepsTheInvariant(LimiterKind kind)
    {
        const int Limit = 5;
        var source = new ManualTicks(TimeSpan.FromSeconds(1));
        using CoarseTimeProvider coarse = source.CreateProvider();
        var spec = new LimiterSpec(kind, Limit, WindowTicks: TimeSpan.FromSeconds(1).Ticks, Segments: 4, TokensPerPeriod: Limit);
        using RateEngineLimiter limiter = spec.Create(coarse);
        List<Admitted> admitted = [];

        for (int step = 0; step < 100; step++)
        {
            source.Advance(TimeSpan.FromMilliseconds(100));
            Attempt(limiter, 3, admitted);
        }

        Assert.Equal(Limit, admitted.Count);

        coarse.Tick();
        Attempt(limiter, 3 * Limit, admitted);
        Assert.Equal(2 * Limit, admitted.Count);

        // Resumed, it admits again at the configured rate.
        source.Advance(TimeSpan.FromSeconds(2));
        coarse.Tick();
        Attempt(limiter, 3 * Limit, admitted);
        Assert.Equal(3 * Limit, admitted.Count);

        var inClockTicks = spec with { WindowTicks = ManualTicks.ToTimestamp(TimeSpan.FromTicks(spec.WindowTicks)) };
        Assert.Null(Guarantee.FindViolation(inClockTicks, admitted));
    }

    /// <summary>The same limiter on the precise clock admits one limit per second of the stall: the coarse one was stricter.</summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void Limiter_TickerStalled_NeverAdmitsMoreThanOnAClockThatMoved(LimiterKind kind)
    {
        const int Limit = 5;
        var stalled = new ManualTicks(TimeSpan.FromSeconds(1));
        var moving = new ManualTicks(TimeSpan.FromSeconds(1));
        using CoarseTimeProvider stalledClock = stalled.CreateProvider();
        using CoarseTimeProvider movingClock = moving.CreateProvider();
        var spec = new LimiterSpec(kind, Limit, WindowTicks: TimeSpan.FromSeconds(1).Ticks, Segments: 4, TokensPerPeriod: Limit);
        using RateEngineLimiter onStalled = spec.Create(stalledClock);
        using RateEngineLimiter onMoving = spec.Create(movingClock);
        List<Admitted> stalledAdmitted = [];
        List<Admitted> movingAdmitted = [];

        for (int step = 0; step < 50; step++)
        {
            TimeSpan span = TimeSpan.FromMilliseconds(37 * ((step % 5) + 1));
            stalled.Advance(span);
            moving.Advance(span);
            movingClock.Tick();
            if (step % 10 == 9)
            {
                stalledClock.Tick(); // the stalled ticker catches up now and then
            }

            Attempt(onStalled, 4, stalledAdmitted);
            Attempt(onMoving, 4, movingAdmitted);
            Assert.True(stalledAdmitted.Count <= movingAdmitted.Count, $"step {step}: the stalled clock admitted more");
        }
    }

    private static void Attempt(RateEngineLimiter limiter, int attempts, List<Admitted> admitted)
    {
        for (int i = 0; i < attempts; i++)
        {
            if (limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation))
            {
                admitted.Add(new Admitted(reservation.Admission.Stamp, reservation.Admission.Permits));
                reservation.Keep();
            }
        }
    }

    private static bool SpinUntil(Func<bool> condition) => SpinWait.SpinUntil(condition, Generous);
}
