using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using RateEngine.Benchmarks.Compare;
using RateEngine.Benchmarks.Subjects;
using RateEngine.Timing;

namespace RateEngine.Benchmarks.Clock;

/// <summary>
/// <c>--clock</c> (issue 13, "a cheap clock, by choice"): in one process, what a clock read costs, what one admit costs
/// on the precise clock and on <see cref="CoarseTimeProvider.Shared"/> next to the in-box limiters, and how far the coarse
/// clock lags <see cref="Stopwatch"/> (sampled in a loop, idle and with both cores busy).
/// </summary>
internal static class ClockHarness
{
    /// <summary>Lag histogram buckets: 1 µs each up to 200 ms; beyond that only the count and the exact maximum.</summary>
    private const int LagBuckets = 200_000;

    public static ClockResult Run(int rounds, TimeSpan run, TimeSpan lagDuration, Action<string> progress)
    {
        var clock = Stopwatch.StartNew();
        MachineInfo machine = MachineInfo.Read();
        CoarseTimeProvider coarse = CoarseTimeProvider.Shared;
        var systemClock = new LimiterClock(TimeProvider.System);
        var coarseClock = new LimiterClock(coarse);

        var reads = new (string Name, Func<long, long> Loop)[]
        {
            ("Stopwatch.GetTimestamp()", n => StopwatchLoop(n)),
            ("Environment.TickCount64", n => TickCountLoop(n)),
            ("CoarseTimeProvider.Shared.GetTimestamp()", n => CoarseLoop(coarse, n)),
            ("LimiterClock.Now(), TimeProvider.System", n => ClockLoop(systemClock, n)),
            ("LimiterClock.Now(), CoarseTimeProvider", n => ClockLoop(coarseClock, n)),
        };

        var subjects = new List<AdmitSubject>();
        foreach ((LimiterKind inbox, LimiterKind engine) in new[]
        {
            (LimiterKind.InboxFixed, LimiterKind.LockFreeFixed),
            (LimiterKind.InboxSliding, LimiterKind.Counter),
            (LimiterKind.InboxBucket, LimiterKind.LockFreeBucket),
        })
        {
            subjects.Add(new AdmitSubject(inbox.DisplayName(), inbox, null, LimiterSetup.CreateAdmitting(inbox)));
            subjects.Add(new AdmitSubject(engine.DisplayName(), engine, "precise", LimiterSetup.CreateAdmitting(engine, TimeProvider.System)));
            subjects.Add(new AdmitSubject(engine.DisplayName(), engine, "coarse", LimiterSetup.CreateAdmitting(engine, coarse)));
        }

        try
        {
            progress("warm-up");
            TimeSpan warmUp = run * 2.5; // 100 ms per subject and pass at the default run length
            for (int pass = 0; pass < 2; pass++)
            {
                foreach ((_, Func<long, long> loop) in reads)
                {
                    WarmUp(loop, warmUp);
                }

                foreach (AdmitSubject subject in subjects)
                {
                    Func<RateLimiter, long, long> loop = Loops.For(subject.Kind);
                    WarmUp(n => Admitted(subject, loop(subject.Limiter, n), n), warmUp);
                }
            }

            var readTimes = reads.Select(_ => new List<double>()).ToArray();
            var admitTimes = subjects.Select(_ => new List<double>()).ToArray();
            long[] readOps = reads.Select(r => Calibrate(r.Loop, run)).ToArray();
            long[] admitOps = subjects.Select(s => Calibrate(n => Loops.For(s.Kind)(s.Limiter, n), run)).ToArray();
            for (int round = 0; round < rounds; round++)
            {
                progress($"round {round + 1}/{rounds}");
                int items = reads.Length + subjects.Count;
                for (int step = 0; step < items; step++)
                {
                    int i = (step + round) % items; // rotated, so a burst of outside load is shared out
                    if (i < reads.Length)
                    {
                        readTimes[i].Add(NanosecondsPerOp(reads[i].Loop, readOps[i]));
                    }
                    else
                    {
                        int s = i - reads.Length;
                        AdmitSubject subject = subjects[s];
                        Func<RateLimiter, long, long> loop = Loops.For(subject.Kind);
                        admitTimes[s].Add(NanosecondsPerOp(n => Admitted(subject, loop(subject.Limiter, n), n), admitOps[s]));
                    }
                }
            }

            progress($"coarse clock lag, idle ({lagDuration.TotalSeconds:F0} s)");
            LagStats idle = SampleLag(coarse, lagDuration, busyThreads: 0);
            progress($"coarse clock lag, {Environment.ProcessorCount} busy threads ({lagDuration.TotalSeconds:F0} s)");
            LagStats busy = SampleLag(coarse, lagDuration, busyThreads: Environment.ProcessorCount);

            return new ClockResult(
                machine with { LoadAverageAtEnd = MachineInfo.LoadAverage() },
                rounds,
                run,
                reads.Select((r, i) => new Timed(r.Name, null, Stat.Of(readTimes[i]))).ToArray(),
                subjects.Select((s, i) => new Timed(s.Name, s.Clock, Stat.Of(admitTimes[i])) { Kind = s.Kind }).ToArray(),
                idle,
                busy,
                clock.Elapsed);
        }
        finally
        {
            foreach (AdmitSubject subject in subjects)
            {
                subject.Limiter.Dispose();
            }
        }
    }

    /// <summary>
    /// Reads the coarse clock then <see cref="Stopwatch"/> in a loop for <paramref name="duration"/>: the lag of every read
    /// (so the distribution is weighted by time, as a limiter's decisions see it) and the steps the cached value took.
    /// </summary>
    private static LagStats SampleLag(CoarseTimeProvider coarse, TimeSpan duration, int busyThreads)
    {
        using var stop = new CancellationTokenSource();
        Thread[] busy = Enumerable.Range(0, busyThreads).Select(_ => new Thread(() =>
        {
            long spins = 0;
            while (!stop.IsCancellationRequested)
            {
                spins++;
            }

            GC.KeepAlive(spins);
        }) { IsBackground = true }).ToArray();
        foreach (Thread thread in busy)
        {
            thread.Start();
        }

        var lag = new long[LagBuckets + 1];
        var steps = new long[LagBuckets + 1];
        long maxLag = 0, maxStep = 0, samples = 0, stepCount = 0;
        long frequency = Stopwatch.Frequency;
        long previous = coarse.GetTimestamp();
        long end = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * frequency);
        while (true)
        {
            long cached = coarse.GetTimestamp();
            long precise = Stopwatch.GetTimestamp();
            if (precise >= end)
            {
                break;
            }

            long behind = precise - cached;
            maxLag = Math.Max(maxLag, behind);
            lag[Bucket(behind, frequency)]++;
            samples++;

            if (cached != previous)
            {
                long step = cached - previous;
                maxStep = Math.Max(maxStep, step);
                steps[Bucket(step, frequency)]++;
                stepCount++;
                previous = cached;
            }
        }

        stop.Cancel();
        foreach (Thread thread in busy)
        {
            thread.Join();
        }

        double ToMicroseconds(long ticks) => ticks * 1e6 / frequency;
        return new LagStats(
            busyThreads,
            duration,
            samples,
            Percentiles(lag, samples, ToMicroseconds(maxLag)),
            ToMicroseconds(maxLag),
            stepCount,
            Percentiles(steps, stepCount, ToMicroseconds(maxStep)),
            ToMicroseconds(maxStep));
    }

    private static int Bucket(long ticks, long frequency) =>
        ticks <= 0 ? 0 : (int)Math.Min(LagBuckets, ticks * 1_000_000 / frequency);

    /// <summary>p50, p90, p99, p99.9 of a 1 µs histogram, in µs (upper edge of the bucket, at most the exact maximum).</summary>
    private static double[] Percentiles(long[] histogram, long count, double max)
    {
        double[] quantiles = [0.5, 0.9, 0.99, 0.999];
        var result = new double[quantiles.Length];
        for (int q = 0; q < quantiles.Length; q++)
        {
            long rank = Math.Max(1, (long)Math.Ceiling(quantiles[q] * count));
            long seen = 0;
            for (int b = 0; b < histogram.Length; b++)
            {
                seen += histogram[b];
                if (seen >= rank)
                {
                    result[q] = Math.Min(b + 1, max);
                    break;
                }
            }
        }

        return result;
    }

    private static long Admitted(AdmitSubject subject, long acquired, long operations)
    {
        Check.That(acquired == operations, $"{subject.Name} ({subject.Clock ?? "in-box"}): an admit-path attempt was refused");
        return acquired;
    }

    private static void WarmUp(Func<long, long> loop, TimeSpan duration)
    {
        long start = Stopwatch.GetTimestamp();
        do
        {
            loop(10_000);
        }
        while (Stopwatch.GetElapsedTime(start) < duration);
    }

    private static long Calibrate(Func<long, long> loop, TimeSpan target)
    {
        long operations = 10_000;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            loop(operations);
            TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
            if (elapsed >= target / 8)
            {
                return Math.Max(10_000, (long)(operations * (target / elapsed)));
            }

            operations *= 4;
        }
    }

    private static double NanosecondsPerOp(Func<long, long> loop, long operations)
    {
        long start = Stopwatch.GetTimestamp();
        loop(operations);
        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / operations;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long StopwatchLoop(long count)
    {
        long sum = 0;
        for (long i = 0; i < count; i++)
        {
            sum += Stopwatch.GetTimestamp();
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long TickCountLoop(long count)
    {
        long sum = 0;
        for (long i = 0; i < count; i++)
        {
            sum += Environment.TickCount64;
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long CoarseLoop(CoarseTimeProvider coarse, long count)
    {
        long sum = 0;
        for (long i = 0; i < count; i++)
        {
            sum += coarse.GetTimestamp();
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long ClockLoop(LimiterClock clock, long count)
    {
        long sum = 0;
        for (long i = 0; i < count; i++)
        {
            sum += clock.Now();
        }

        return sum;
    }

    private sealed record AdmitSubject(string Name, LimiterKind Kind, string? Clock, RateLimiter Limiter);
}

/// <summary>One measured row: a clock read, or one admit of a limiter (<see cref="Clock"/> null for in-box ones).</summary>
internal sealed record Timed(string Name, string? Clock, Stat NanosecondsPerOp)
{
    public LimiterKind Kind { get; init; }
}

/// <summary>
/// The coarse clock's lag behind <see cref="Stopwatch"/> over one sampling run, in µs: percentiles p50, p90, p99, p99.9
/// of every read's lag and of the steps the cached value took.
/// </summary>
internal sealed record LagStats(
    int BusyThreads,
    TimeSpan Duration,
    long Samples,
    double[] Lag,
    double MaxLag,
    long Steps,
    double[] Step,
    double MaxStep);

internal sealed record ClockResult(
    MachineInfo Machine,
    int Rounds,
    TimeSpan Run,
    IReadOnlyList<Timed> Reads,
    IReadOnlyList<Timed> Admits,
    LagStats Idle,
    LagStats Busy,
    TimeSpan Duration);
