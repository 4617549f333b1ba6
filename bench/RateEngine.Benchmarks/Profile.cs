using System.Diagnostics;
using System.Threading.RateLimiting;
using RateEngine.Benchmarks.Subjects;
using RateEngine.Benchmarks.Subjects.Partitions;

namespace RateEngine.Benchmarks;

/// <summary>
/// <c>--profile KIND admit|reject N</c>: N single-thread attempts on one limiter and nothing else, for a profiler such as
/// <c>valgrind --tool=callgrind</c>. Prints ns/op, which under a profiler means little; the profile is the output.
/// </summary>
internal static class Profile
{
    public static int Run(string[] args)
    {
        if (args.Length > 0 && args[0] == "partition")
        {
            return RunPartition(args[1..]);
        }

        if (args.Length > 0 && args[0] == "hot")
        {
            return RunHot(args[1..]);
        }

        if (args.Length != 3 || !Enum.TryParse(args[0], ignoreCase: true, out LimiterKind kind) || args[1] is not ("admit" or "reject"))
        {
            Console.Error.WriteLine($"usage: --profile {string.Join('|', LimiterKinds.All)} admit|reject ATTEMPTS");
            return 2;
        }

        bool admit = args[1] == "admit";
        long attempts = long.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
        using RateLimiter limiter = admit ? LimiterSetup.CreateAdmitting(kind) : LimiterSetup.CreateExhausted(kind);
        Func<RateLimiter, long, long> loop = Loops.For(kind);

        // A fixed amount of warm-up, so that two runs differ only in their measured attempts (callgrind-jit.py subtracts
        // them). The pauses let tiered compilation (tier 0, instrumented, tier 1) finish in the background; under a slow
        // profiler more passes may be needed: BENCH_WARMUP_PASSES.
        int passes = int.TryParse(Environment.GetEnvironmentVariable("BENCH_WARMUP_PASSES"), out int p) ? p : 3;
        for (int pass = 0; pass < passes; pass++)
        {
            for (int call = 0; call < 1_000; call++)
            {
                loop(limiter, 100);
            }

            Thread.Sleep(200);
        }

        long start = Stopwatch.GetTimestamp();
        long acquired = loop(limiter, attempts);
        TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
        Check.That(acquired == (admit ? attempts : 0), $"{kind} {args[1]}: {acquired} of {attempts} admitted");
        Console.WriteLine($"{kind} {args[1]}: {attempts} attempts, {elapsed.TotalNanoseconds / attempts:F1} ns/op");
        return 0;
    }
    /// <summary>
    /// <c>--profile partition FAMILY KEYS inbox|engine N</c>: warm-up, then one first-touch run of N new keys on a fresh
    /// limiter (FAMILY: FixedWindow, TokenBucket, SlidingWindow; KEYS: Int, IPv4, IPv6), for <c>perf record</c>. Prints the
    /// rate and the garbage collections the run caused.
    /// </summary>
    private static int RunPartition(string[] args)
    {
        if (!TryParseSubject(args, "partition", "KEYS [RUNS]", out PartitionFamily family, out PartitionKeyKind keyKind, out PartitionSide side))
        {
            return 2;
        }

        int keys = int.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture);
        int runs = args.Length == 5 ? int.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture) : 1;
        PartitionSubject subject = Subject(family, side, keyKind, keys);

        int warmUpKeys = Math.Min(keys, 20_000);
        for (int pass = 0; pass < 20; pass++)
        {
            using FirstTouchRun warmUp = subject.StartFirstTouch();
            warmUp.Touch(0, warmUpKeys);
            if (pass % 5 == 4)
            {
                Thread.Sleep(200);
            }
        }

        for (int i = 0; i < runs; i++)
        {
            FirstTouchOnce(subject, keys);
        }

        return 0;
    }

    /// <summary>
    /// <c>--profile hot FAMILY KEYS inbox|engine SECONDS [THREADS]</c>: the compare mode's hot-key loop (1,000 keys the limiter
    /// already holds, each thread in its own random order), after half a second of warm-up, for SECONDS on THREADS threads
    /// (default 2), for <c>perf record</c>. Prints the total rate.
    /// </summary>
    private static int RunHot(string[] args)
    {
        if (!TryParseSubject(args, "hot", "SECONDS [THREADS]", out PartitionFamily family, out PartitionKeyKind keyKind, out PartitionSide side))
        {
            return 2;
        }

        double seconds = double.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture);
        int threads = args.Length == 5 ? int.Parse(args[4], System.Globalization.CultureInfo.InvariantCulture) : 2;
        int keys = PartitionSetup.HotKeys;
        PartitionSubject subject = Subject(family, side, keyKind, keys);

        using HotKeyTarget hot = subject.CreateHot(keys);
        Func<long, long> warmUp = hot.Worker(seed: 1);
        for (var warming = Stopwatch.StartNew(); warming.Elapsed < TimeSpan.FromSeconds(0.5);)
        {
            warmUp(1_000); // tier-1 code before the clock starts, as in the compare mode's warm-up
        }

        long total = 0;
        var stop = Stopwatch.StartNew();
        Thread[] workers = [.. Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            Func<long, long> worker = hot.Worker(seed: 100 + t);
            long done = 0;
            while (stop.Elapsed.TotalSeconds < seconds)
            {
                done += worker(10_000);
            }

            Interlocked.Add(ref total, done);
        }))];
        foreach (Thread worker in workers)
        {
            worker.Start();
        }

        foreach (Thread worker in workers)
        {
            worker.Join();
        }

        Console.WriteLine($"{subject.Family} {subject.KeyKind} {subject.Side} hot keys, {threads} threads: {total / stop.Elapsed.TotalSeconds / 1e6:F2} M admissions/s");
        return 0;
    }

    /// <summary>
    /// FAMILY KEYS inbox|engine and one or two numbers after them; prints <paramref name="mode"/>'s usage when they do not
    /// parse.
    /// </summary>
    private static bool TryParseSubject(
        string[] args, string mode, string numbers, out PartitionFamily family, out PartitionKeyKind keyKind, out PartitionSide side)
    {
        (family, keyKind, side) = (default, default, default);
        if (args.Length is 4 or 5
            && Enum.TryParse(args[0], ignoreCase: true, out family)
            && Enum.TryParse(args[1], ignoreCase: true, out keyKind)
            && Enum.TryParse(args[2], ignoreCase: true, out side))
        {
            return true;
        }

        Console.Error.WriteLine($"usage: --profile {mode} {string.Join('|', PartitionFamilies.All)} {string.Join('|', PartitionKeyKinds.All)} inbox|engine {numbers}");
        return false;
    }

    /// <summary>A subject over <paramref name="keys"/> seeded keys of <paramref name="keyKind"/>.</summary>
    private static PartitionSubject Subject(PartitionFamily family, PartitionSide side, PartitionKeyKind keyKind, int keys) => keyKind switch
    {
        PartitionKeyKind.Int => PartitionSubject.Create(family, side, keyKind, PartitionKeys.Ints(keys, seed: 1)),
        PartitionKeyKind.IPv4 => PartitionSubject.Create(family, side, keyKind, PartitionKeys.IPv4(keys, seed: 2)),
        _ => PartitionSubject.Create(family, side, keyKind, PartitionKeys.IPv6(keys, seed: 3)),
    };

    private static void FirstTouchOnce(PartitionSubject subject, int keys)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using FirstTouchRun run = subject.StartFirstTouch();
        TimeSpan pauseBefore = GC.GetTotalPauseDuration();
        int[] collectionsBefore = [GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)];
        long start = Stopwatch.GetTimestamp();
        long acquired = run.Touch(0, keys);
        TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
        TimeSpan pause = GC.GetTotalPauseDuration() - pauseBefore;
        Check.That(acquired == keys, $"{acquired} of {keys} new keys admitted");
        Console.WriteLine($"{subject.Family} {subject.KeyKind} {subject.Side}: {keys} new keys, {keys / elapsed.TotalSeconds / 1e6:F2} M keys/s, "
            + $"{elapsed.TotalNanoseconds / keys:F0} ns/key, GC pauses {pause.TotalMilliseconds:F0} ms ({pause / elapsed * 100:F0} %), "
            + $"collections gen0/1/2 {GC.CollectionCount(0) - collectionsBefore[0]}/{GC.CollectionCount(1) - collectionsBefore[1]}/{GC.CollectionCount(2) - collectionsBefore[2]}");
    }
}
