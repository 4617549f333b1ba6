using System.Diagnostics;
using System.Runtime;
using System.Runtime.InteropServices;

namespace RateEngine.Benchmarks.Compare;

/// <summary>What the numbers were measured on.</summary>
internal sealed record MachineInfo(
    string Cpu,
    int Cores,
    string Os,
    string Runtime,
    string Gc,
    string Pgo,
    long StopwatchFrequency,
    DateTimeOffset Date,
    string LoadAverageAtStart,
    string? LoadAverageAtEnd = null)
{
    /// <summary>
    /// The round trip of one cache line between two threads, in ns (median of 5 runs; NaN on one core): what every 2-thread
    /// figure pays per transfer of a shared line. It differs between hosts (VMs are placed on whatever cores are free) by
    /// more than the limiters differ, so the 2-thread ratios of two runs compare only at similar round trips.
    /// </summary>
    public double CacheLineRoundTrip { get; init; } = double.NaN;

    /// <summary>
    /// One dependent load's latency, in ns, in random 64-byte lines spread over each of <see cref="WorkingSets"/> (median of
    /// 3 runs each): what a cache miss costs at that footprint. The 10k-key and 10k-user runs keep a few megabytes of state,
    /// and on a VM the point where this curve jumps (its share of a cache that neighbours also use) moves between runs.
    /// </summary>
    public IReadOnlyList<double> DependentLoads { get; init; } = [];

    /// <summary>The working sets, in MB, that <see cref="DependentLoads"/> is measured over.</summary>
    public static readonly int[] WorkingSets = [1, 2, 4, 8, 16];

    public static MachineInfo Read() => new(
        CpuModel(),
        Environment.ProcessorCount,
        OsName(),
        $"{RuntimeInformation.FrameworkDescription} ({RuntimeInformation.ProcessArchitecture})",
        $"{(GCSettings.IsServerGC ? "server" : "workstation")}, {(GCSettings.LatencyMode == GCLatencyMode.Batch ? "non-concurrent" : "concurrent")}",
        Environment.GetEnvironmentVariable("DOTNET_TieredPGO") is "0" ? "off (DOTNET_TieredPGO=0)" : "on (default)",
        Stopwatch.Frequency,
        DateTimeOffset.UtcNow,
        LoadAverage())
    {
        CacheLineRoundTrip = MeasureCacheLineRoundTrip(),
        DependentLoads = [.. WorkingSets.Select(MeasureDependentLoad)],
    };

    /// <summary>The dependent loads as text: "12 / 15 / 23 / 119 / 150 ns at 1 / 2 / 4 / 8 / 16 MB".</summary>
    public string DependentLoadText => DependentLoads.Count == 0
        ? "n/a"
        : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{string.Join(" / ", DependentLoads.Select(ns => ns.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)))} ns at {string.Join(" / ", WorkingSets)} MB");

    /// <summary>The round trip as text: "84 ns", or "n/a" on one core.</summary>
    public string RoundTripText => double.IsNaN(CacheLineRoundTrip) ? "n/a" : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{CacheLineRoundTrip:F0} ns");

    private static double MeasureCacheLineRoundTrip()
    {
        if (Environment.ProcessorCount < 2)
        {
            return double.NaN;
        }

        double[] runs = [.. Enumerable.Range(0, 5).Select(_ => PingPong(roundTrips: 50_000))];
        Array.Sort(runs);
        return runs[2];
    }

    private static double MeasureDependentLoad(int megabytes)
    {
        double[] runs = [.. Enumerable.Range(0, 3).Select(_ => Chase(megabytes, steps: 1_000_000))];
        Array.Sort(runs);
        return runs[1];
    }

    /// <summary>
    /// Follows a chain through every 64-byte line of <paramref name="megabytes"/> in a random order: each load's address is the
    /// previous load's value, so no two overlap, and the hardware prefetcher cannot guess the next line.
    /// </summary>
    private static double Chase(int megabytes, int steps)
    {
        const int IntsPerLine = 16;
        int lines = megabytes * (1 << 20) / 64;
        int[] order = [.. Enumerable.Range(0, lines)];
        new Random(20261207).Shuffle(order);
        int[] next = new int[lines * IntsPerLine];
        for (int i = 0; i < lines; i++)
        {
            next[order[i] * IntsPerLine] = order[(i + 1) % lines] * IntsPerLine;
        }

        int at = 0;
        for (int i = 0; i < lines; i++)
        {
            at = next[at]; // every line once, so the timed loop starts from whatever the caches keep of it
        }

        long started = Stopwatch.GetTimestamp();
        for (int i = 0; i < steps; i++)
        {
            at = next[at];
        }

        double nanoseconds = Stopwatch.GetElapsedTime(started).TotalNanoseconds / steps;
        return at >= 0 ? nanoseconds : double.NaN; // uses the chain's end, so the loop is not dropped
    }

    /// <summary>Two threads take turns on one word: each waits until the other has written, then writes.</summary>
    private static double PingPong(int roundTrips)
    {
        long[] words = new long[32]; // the word sits 64 bytes in, on a line of its own
        long turns = 2L * roundTrips;
        var other = new Thread(() =>
        {
            for (long turn = 1; turn < turns; turn += 2)
            {
                while (Volatile.Read(ref words[8]) != turn)
                {
                }

                Volatile.Write(ref words[8], turn + 1);
            }
        });
        other.Start();
        long started = Stopwatch.GetTimestamp();
        for (long turn = 0; turn < turns; turn += 2)
        {
            while (Volatile.Read(ref words[8]) != turn)
            {
            }

            Volatile.Write(ref words[8], turn + 1);
        }

        other.Join();
        return Stopwatch.GetElapsedTime(started).TotalNanoseconds / roundTrips;
    }

    /// <summary>The 1, 5 and 15 minute load averages: anything well above 0 means something else was running.</summary>
    public static string LoadAverage() =>
        TryRead("/proc/loadavg") is { } line ? string.Join(' ', line.Split(' ').Take(3)) : "n/a";

    /// <summary>The model name, with its family and model numbers (a VM's name hides the generation: "AMD EPYC").</summary>
    private static string CpuModel()
    {
        string[] lines = TryRead("/proc/cpuinfo")?.Split('\n') ?? [];
        string? Field(string name) => lines
            .Where(l => l.StartsWith(name, StringComparison.Ordinal) && l.AsSpan(name.Length).TrimStart().StartsWith(":"))
            .Select(l => l[(l.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim())
            .FirstOrDefault();
        string? model = Field("model name");
        if (string.IsNullOrEmpty(model))
        {
            return RuntimeInformation.ProcessArchitecture.ToString();
        }

        return Field("cpu family") is { } family && Field("model") is { } number ? $"{model} (family {family}, model {number})" : model;
    }

    private static string OsName()
    {
        string? pretty = TryRead("/etc/os-release")?
            .Split('\n')
            .Where(l => l.StartsWith("PRETTY_NAME=", StringComparison.Ordinal))
            .Select(l => l["PRETTY_NAME=".Length..].Trim('"'))
            .FirstOrDefault();
        string? kernel = TryRead("/proc/sys/kernel/osrelease");
        string name = pretty ?? RuntimeInformation.OSDescription;
        return kernel is null ? name : $"{name}, Linux kernel {kernel}";
    }

    private static string? TryRead(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
