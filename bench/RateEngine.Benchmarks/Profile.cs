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

        // Enough calls for tier-1 code (call counting starts 100 ms after start-up JIT activity stops).
        long warm = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(warm) < TimeSpan.FromMilliseconds(500))
        {
            loop(limiter, 100);
        }

        long start = Stopwatch.GetTimestamp();
        long acquired = loop(limiter, attempts);
        TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
        Check.That(acquired == (admit ? attempts : 0), $"{kind} {args[1]}: {acquired} of {attempts} admitted");
        Console.WriteLine($"{kind} {args[1]}: {attempts} attempts, {elapsed.TotalNanoseconds / attempts:F1} ns/op");
        return 0;
    }
}
