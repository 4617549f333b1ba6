using System.Diagnostics;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks;

/// <summary>
/// <c>--profile KIND admit|reject N</c>: N single-thread attempts on one limiter and nothing else, for a profiler such as
/// <c>valgrind --tool=callgrind</c>. Prints ns/op, which under a profiler means little; the profile is the output.
/// </summary>
internal static class Profile
{
    public static int Run(string[] args)
    {
        if (args.Length != 3 || !Enum.TryParse(args[0], ignoreCase: true, out LimiterKind kind) || args[1] is not ("admit" or "reject"))
        {
            Console.Error.WriteLine($"usage: --profile {string.Join('|', LimiterKinds.All)} admit|reject ATTEMPTS");
            return 2;
        }

        bool admit = args[1] == "admit";
        long attempts = long.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
        using RateLimiter limiter = admit ? Limiters.CreateAdmitting(kind) : Limiters.CreateExhausted(kind);
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
}
