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
    public static MachineInfo Read() => new(
        CpuModel(),
        Environment.ProcessorCount,
        OsName(),
        $"{RuntimeInformation.FrameworkDescription} ({RuntimeInformation.ProcessArchitecture})",
        $"{(GCSettings.IsServerGC ? "server" : "workstation")}, {(GCSettings.LatencyMode == GCLatencyMode.Batch ? "non-concurrent" : "concurrent")}",
        Environment.GetEnvironmentVariable("DOTNET_TieredPGO") is "0" ? "off (DOTNET_TieredPGO=0)" : "on (default)",
        Stopwatch.Frequency,
        DateTimeOffset.UtcNow,
        LoadAverage());

    /// <summary>The 1, 5 and 15 minute load averages: anything well above 0 means something else was running.</summary>
    public static string LoadAverage() =>
        TryRead("/proc/loadavg") is { } line ? string.Join(' ', line.Split(' ').Take(3)) : "n/a";

    private static string CpuModel()
    {
        string? cpuinfo = TryRead("/proc/cpuinfo");
        string? model = cpuinfo?
            .Split('\n')
            .Where(l => l.StartsWith("model name", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim())
            .FirstOrDefault();
        return string.IsNullOrEmpty(model) ? RuntimeInformation.ProcessArchitecture.ToString() : model;
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
