using System.Diagnostics;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using RateEngine.Benchmarks;
using RateEngine.Benchmarks.Compare;
using RateEngine.Benchmarks.Suites;

// dotnet run -c Release --project bench/RateEngine.Benchmarks [-- options]
//   (no options)          compare mode: one table of RateEngine vs the in-box limiters, written to bench/results/
//   --bdn [BDN args]      the full BenchmarkDotNet suites through BenchmarkSwitcher (no args: --filter *)
//   --smoke               seconds-long run of everything (CI, via tests/run.sh); writes to a temp dir
//   --profile KIND PATH N N attempts of one limiter (KIND: InboxSliding, Log, ..., PATH: admit|reject), for profilers
//   compare options: --rounds N, --out DIR, --partition-rounds N (0: no partition section), --partition-hot-rounds N, --partition-keys N
try
{
    if (args.Length > 0 && args[0] == "--bdn")
    {
        string[] rest = args.Length > 1 ? args[1..] : ["--filter", "*"];
        IEnumerable<Summary> summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(rest, BdnConfig.Create());
        bool failed = summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
        return failed ? 1 : 0;
    }

    if (args.Contains("--smoke"))
    {
        return Smoke.Run();
    }

    if (args.Length > 0 && args[0] == "--profile")
    {
        return Profile.Run(args[1..]);
    }

    if (args.Contains("--help") || args.Contains("-h"))
    {
        Console.WriteLine("usage: dotnet run -c Release --project bench/RateEngine.Benchmarks [-- --bdn [BenchmarkDotNet args] | --smoke | --rounds N | --out DIR | --partition-rounds N | --partition-hot-rounds N | --partition-keys N]");
        return 0;
    }

    var settings = new CompareSettings { OutputDirectory = Path.Combine(RepositoryRoot(), "bench", "results") };
    for (int i = 0; i < args.Length; i++)
    {
        settings = args[i] switch
        {
            "--rounds" => settings with { Rounds = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture) },
            "--out" => settings with { OutputDirectory = Path.GetFullPath(args[++i]) },
            "--partition-rounds" => settings with { PartitionRounds = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture) },
            "--partition-hot-rounds" => settings with { PartitionHotRounds = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture) },
            "--partition-keys" => settings with { PartitionKeys = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture) },
            _ => throw new ArgumentException($"unknown option '{args[i]}' (try --help)"),
        };
    }

    return RunCompare(settings, "dotnet run -c Release --project bench/RateEngine.Benchmarks" + (args.Length > 0 ? " -- " + string.Join(' ', args) : ""));
}
catch (Exception e)
{
    Console.Error.WriteLine($"benchmark failed: {e}");
    return 1;
}

static string RepositoryRoot()
{
    foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "RateEngine.sln")))
            {
                return dir.FullName;
            }
        }
    }

    throw new InvalidOperationException("RateEngine.sln not found above the working directory; pass --out DIR");
}

/// <summary>Entry points shared by the default mode and the smoke run.</summary>
internal static partial class Program
{
    public static int RunCompare(CompareSettings settings, string commandLine)
    {
        var total = Stopwatch.StartNew();
        CompareResult result = new CompareHarness(settings).Run();
        Console.WriteLine();
        Console.WriteLine(CompareReport.Table(result));
        Console.WriteLine();
        Console.WriteLine(CompareReport.TargetsTable(result));
        Console.WriteLine();
        if (result.Partitions is { } partitions)
        {
            Console.WriteLine($"Partitioned limiters, {partitions.Keys:N0} keys per first-touch run:");
            Console.WriteLine(PartitionReport.Table(partitions));
            Console.WriteLine();
            Console.WriteLine(PartitionReport.TargetsTable(partitions));
            Console.WriteLine();
        }

        (string markdown, string chart) = CompareReport.Write(result, commandLine);
        Console.WriteLine($"wrote {markdown}");
        Console.WriteLine($"wrote {chart}");
        Console.WriteLine($"compare mode took {total.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}
