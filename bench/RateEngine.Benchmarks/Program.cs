using System.Diagnostics;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using RateEngine.Benchmarks;
using RateEngine.Benchmarks.Compare;
using RateEngine.Benchmarks.Policies;
using RateEngine.Benchmarks.Simulations;
using RateEngine.Benchmarks.Subjects;
using RateEngine.Benchmarks.Subjects.Partitions;
using RateEngine.Benchmarks.Suites;

// Modes and options: Program.Usage below, which --help prints, and bench/README.md.
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
        Console.WriteLine(Program.Usage());
        return 0;
    }

    if (args.Length > 0 && args[0] == "--policy")
    {
        string output = args switch
        {
            [_] => Path.Combine(RepositoryRoot(), "bench", "results"),
            [_, "--out", string dir] => Path.GetFullPath(dir),
            _ => throw new ArgumentException("usage: --policy [--out DIR] (try --help)"),
        };
        return Program.RunPolicy(output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- " + string.Join(' ', args));
    }

    if (args.Length > 0 && args[0] == "--redis")
    {
        (string? endpoint, string output) = args switch
        {
            [_] => ((string?)null, Path.Combine(RepositoryRoot(), "bench", "results")),
            [_, "--out", string dir] => (null, Path.GetFullPath(dir)),
            [_, string address] => (address, Path.Combine(RepositoryRoot(), "bench", "results")),
            [_, string address, "--out", string dir] => (address, Path.GetFullPath(dir)),
            _ => throw new ArgumentException("usage: --redis [host:port] [--out DIR] (try --help)"),
        };
        return Program.RunRedis(endpoint, output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- " + string.Join(' ', args));
    }

    if (args.Length > 0 && args[0] == "--http")
    {
        string output = args switch
        {
            [_] => Path.Combine(RepositoryRoot(), "bench", "results"),
            [_, "--out", string dir] => Path.GetFullPath(dir),
            _ => throw new ArgumentException("usage: --http [--out DIR] (try --help)"),
        };
        return Program.RunHttp(RepositoryRoot(), output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- " + string.Join(' ', args));
    }

    if (args.Length > 0 && args[0] == "--clock")
    {
        string output = args switch
        {
            [_] => Path.Combine(RepositoryRoot(), "bench", "results"),
            [_, "--out", string dir] => Path.GetFullPath(dir),
            _ => throw new ArgumentException("usage: --clock [--out DIR] (try --help)"),
        };
        return Program.RunClock(output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- " + string.Join(' ', args));
    }

    if (args.Length > 0 && args[0] == "--percore")
    {
        string output = args switch
        {
            [_] => Path.Combine(RepositoryRoot(), "bench", "results"),
            [_, "--out", string dir] => Path.GetFullPath(dir),
            _ => throw new ArgumentException("usage: --percore [--out DIR] (try --help)"),
        };
        return RateEngine.Benchmarks.PerCore.PerCoreHarness.Run(output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- " + string.Join(' ', args));
    }

    if (args.Length > 0 && args[0] == "--estimator")
    {
        string output = args switch
        {
            [_] => Path.Combine(RepositoryRoot(), "bench", "results"),
            [_, "--out", string dir] => Path.GetFullPath(dir),
            _ => throw new ArgumentException("usage: --estimator [--out DIR] (try --help)"),
        };
        return Program.RunEstimator(output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- " + string.Join(' ', args));
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
            "--policy-rounds" => settings with { PolicyRounds = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture) },
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

/// <summary>Entry points shared by the default mode and the smoke run, and the usage text.</summary>
internal static partial class Program
{
    /// <summary>Every mode and option the program parses; defaults and value lists come from the code that uses them.</summary>
    public static string Usage()
    {
        var defaults = new CompareSettings { OutputDirectory = Path.Combine("bench", "results") };
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"""
            usage: dotnet run -c Release --project bench/RateEngine.Benchmarks [-- MODE | COMPARE OPTIONS]

            modes:
              (none)                    compare mode, the README's main command: every limiter against its in-box one in
                                        one run, then the partitioned limiters, the layered policy (as --policy), then
                                        the estimator simulation (as --estimator), and a short Redis section (as --redis) when
                                        redis-server is on PATH; tables with their targets on the console, compare.md and
                                        compare.png in the output directory
              --bdn [ARGS]              the BenchmarkDotNet suites; ARGS go to BenchmarkSwitcher (none: --filter *),
                                        e.g. --filter '*Uncontended*', --job short, --list flat
              --smoke                   every benchmark a few times, then the compare mode with tiny counts and the
                                        estimator simulation into a temp directory; seconds (CI runs it from tests/run.sh)
              --profile KIND admit|reject N
                                        N single-thread attempts on one limiter, for a profiler
                                        KIND: {string.Join('|', LimiterKinds.All)}
              --profile partition FAMILY KEYS inbox|engine N [RUNS]
                                        warm-up, then RUNS (default 1) first-touch runs of N new keys on a fresh limiter
                                        FAMILY: {string.Join('|', PartitionFamilies.All)}; KEYS: {string.Join('|', PartitionKeyKinds.All)}
              --profile hot FAMILY KEYS inbox|engine SECONDS [THREADS]
                                        the hot-key loop on 1,000 held keys for SECONDS on THREADS threads (default 2)
              --policy [--out DIR]      the layered-policy section alone: a 5-layer RatePolicy against 5 in-box limiters
                                        chained with CreateChained, 10k users; about 10 s; prints the table and writes
                                        policy.md to DIR (default bench/results of the repository)
              --redis [HOST:PORT] [--out DIR]
                                        the Redis mode: 4 nodes x 16 callers on one key and on 10k keys; exact,
                                        hybrid and the two seed designs (check-then-add, MULTI per call), with the
                                        in-process limiter as yardstick: admissions/s, commands and round trips per
                                        1,000 admissions (INFO commandstats), latency p50/p99, over- and
                                        under-admission at saturation; starts its own redis-server when no address is
                                        given; about a minute; writes redis.md to DIR (default bench/results)
              --http [--out DIR]        requests per second on the sample gateway (a separate process on loopback, 32
                                        connections): no limiter, the in-box chained limiters, RateEngine's policy;
                                        3 rounds of 8 s each; about 90 s; writes http.md to DIR
              --percore [--out DIR]     issue 13's per-core blocks: two threads on one shared fixed window and counter, with and
                                        without blocks, on the precise and the coarse clock, against the in-box limiters and the
                                        Interlocked ceiling, what blocks hold back at saturation, and partitioned hot keys with
                                        and without per-core blocks; percore.md (about 50 s)
              --clock [--out DIR]       issue 13's clock choice: what a clock read costs, one admit of the fixed window, the
                                        counter and the bucket on the precise clock and on CoarseTimeProvider against the
                                        in-box limiters, and the coarse clock's lag behind Stopwatch (idle, and with every
                                        core busy); clock.md to DIR (default bench/results); about 20 s
              --estimator [--out DIR]   the estimator simulation alone: requests admitted under a tokens-per-minute budget
                                        when reserving max_tokens, the learned CostEstimator estimate, or the exact actual;
                                        seeded, on a virtual clock, about a second; prints the table and writes
                                        estimator.md to DIR (default bench/results of the repository). The compare mode
                                        appends the same table to its output and compare.md
              --help, -h                this text

            compare options:
              --rounds N                single-limiter rounds (default {defaults.Rounds})
              --partition-rounds N      partition first-touch and memory rounds (default {defaults.PartitionRounds}; 0 skips the partition section)
              --partition-hot-rounds N  partition hot-key rounds (default {defaults.PartitionHotRounds}; 0 skips the partition section)
              --policy-rounds N         layered-policy rounds (default {defaults.PolicyRounds}; 0 skips the section)
              --partition-keys N        new keys per first-touch run (default {defaults.PartitionKeys:N0})
              --out DIR                 where compare.md and compare.png go (default {defaults.OutputDirectory} of the repository)

            environment:
              BENCH_WARMUP_PASSES       warm-up passes of --profile KIND (default 3)
            """);
    }

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

        if (result.Policy is { } policy)
        {
            Console.WriteLine("Layered policy, 5 layers, 10k users:");
            Console.WriteLine(PolicyReport.Table(policy));
            Console.WriteLine(string.Join(Environment.NewLine, PolicyReport.Verdicts(policy)));
            Console.WriteLine();
        }

        if (result.Estimator is { } estimator)
        {
            Console.WriteLine($"Learned reservations (estimator simulation, {estimator.Duration.TotalMilliseconds:F0} ms):");
            Console.WriteLine(EstimatorReport.Table(estimator));
            Console.WriteLine();
        }

        if (result.Redis is { } redis)
        {
            var section = new System.Text.StringBuilder();
            RateEngine.Benchmarks.Redis.RedisReport.AppendSection(section, redis, RateEngine.Benchmarks.Redis.RedisBenchSettings.ForCompare(settings.IsSmoke), $"Redis mode ({redis.Duration.TotalSeconds:F0} s):");
            Console.Write(section);
        }

        (string markdown, string chart) = CompareReport.Write(result, commandLine);
        Console.WriteLine($"wrote {markdown}");
        Console.WriteLine($"wrote {chart}");
        Console.WriteLine($"compare mode took {total.Elapsed.TotalSeconds:F1} s");
        return 0;
    }

    /// <summary><c>--policy</c>: the layered-policy section alone, its table on the console, and policy.md.</summary>
    public static int RunPolicy(string outputDirectory, string commandLine)
    {
        var defaults = new CompareSettings { OutputDirectory = outputDirectory };
        var clock = Stopwatch.StartNew();
        PolicyResult result = PolicyHarness.Run(
            defaults.PolicyRounds, defaults.SingleThreadRound, defaults.ThreadedRound, message => Console.WriteLine($"[{clock.Elapsed.TotalSeconds,6:F1}s] {message}"));
        Console.WriteLine(PolicyReport.Table(result));
        Console.WriteLine(string.Join(Environment.NewLine, PolicyReport.Verdicts(result)));
        var text = new System.Text.StringBuilder();
        text.AppendLine("# Layered policy benchmark");
        text.AppendLine();
        MachineInfo m = MachineInfo.Read();
        text.AppendLine(System.Globalization.CultureInfo.InvariantCulture,
            $"Measured by `{commandLine}` on {m.Date:yyyy-MM-dd HH:mm} UTC in {result.Duration.TotalSeconds:F0} s: {m.Cpu}, {m.Cores} cores, {m.Os}, {m.Runtime}, {m.Gc} GC; one dependent load in random lines {m.DependentLoadText}; load average {m.LoadAverageAtStart}.");
        text.AppendLine();
        PolicyReport.AppendSection(text, result);
        return WriteReport(outputDirectory, "policy.md", text);
    }

    /// <summary>Writes a mode's report to <paramref name="outputDirectory"/> and says where.</summary>
    /// <summary><c>--clock</c>: clock reads, admits on each clock and the coarse clock's lag; clock.md.</summary>
    public static int RunClock(string outputDirectory, string commandLine, int rounds = 21, double runMilliseconds = 40, double lagSeconds = 3)
    {
        var clock = Stopwatch.StartNew();
        RateEngine.Benchmarks.Clock.ClockResult result = RateEngine.Benchmarks.Clock.ClockHarness.Run(
            rounds, TimeSpan.FromMilliseconds(runMilliseconds), TimeSpan.FromSeconds(lagSeconds),
            message => Console.WriteLine($"[{clock.Elapsed.TotalSeconds,6:F1}s] {message}"));
        Console.WriteLine(RateEngine.Benchmarks.Clock.ClockReport.ReadsTable(result));
        Console.WriteLine();
        Console.WriteLine(RateEngine.Benchmarks.Clock.ClockReport.AdmitsTable(result));
        Console.WriteLine();
        Console.WriteLine(string.Join(Environment.NewLine, RateEngine.Benchmarks.Clock.ClockReport.Verdicts(result)));
        Console.WriteLine();
        Console.WriteLine(RateEngine.Benchmarks.Clock.ClockReport.LagTable(result));
        return WriteReport(outputDirectory, "clock.md", new System.Text.StringBuilder(RateEngine.Benchmarks.Clock.ClockReport.Document(result, commandLine)));
    }

    private static int WriteReport(string outputDirectory, string fileName, System.Text.StringBuilder text)
    {
        Directory.CreateDirectory(outputDirectory);
        string path = Path.Combine(outputDirectory, fileName);
        File.WriteAllText(path, text.ToString());
        Console.WriteLine($"wrote {path}");
        return 0;
    }

    /// <summary><c>--redis</c>: the Redis mode against a server (started here when no address is given), and redis.md.</summary>
    public static int RunRedis(string? endpoint, string outputDirectory, string commandLine)
    {
        var clock = Stopwatch.StartNew();
        using RateEngine.Redis.Tests.Support.RedisServer? server = endpoint is null ? new RateEngine.Redis.Tests.Support.RedisServer() : null;
        var settings = new RateEngine.Benchmarks.Redis.RedisBenchSettings();
        MachineInfo m = MachineInfo.Read();
        RateEngine.Benchmarks.Redis.RedisResult result = RateEngine.Benchmarks.Redis.RedisHarness.Run(
            endpoint ?? server!.Endpoint, settings, message => Console.WriteLine($"[{clock.Elapsed.TotalSeconds,6:F1}s] {message}"));
        var text = new System.Text.StringBuilder();
        text.AppendLine("# Redis mode benchmark");
        text.AppendLine();
        text.AppendLine(System.Globalization.CultureInfo.InvariantCulture,
            $"Measured by `{commandLine}` on {m.Date:yyyy-MM-dd HH:mm} UTC in {clock.Elapsed.TotalSeconds:F0} s: {m.Cpu}, {m.Cores} cores (a VM), {m.Os}, {m.Runtime}; "
            + $"the redis-server runs on the same {m.Cores} cores as the nodes and their callers; one dependent load in random lines {m.DependentLoadText}; load average {m.LoadAverageAtStart} at the start, {MachineInfo.LoadAverage()} at the end.");
        text.AppendLine();
        RateEngine.Benchmarks.Redis.RedisReport.AppendSection(text, result, settings, "## Exact, hybrid and the two seed designs (issue 11)");
        Console.Write(text);
        return WriteReport(outputDirectory, "redis.md", text);
    }

    /// <summary><c>--http</c>: the sample gateway's requests per second without a limiter, with the in-box chain, with RateEngine.</summary>
    public static int RunHttp(string repositoryRoot, string outputDirectory, string commandLine)
    {
        const int Connections = 32;
        const int Rounds = 3;
        var measure = TimeSpan.FromSeconds(8);
        var clock = Stopwatch.StartNew();
        IReadOnlyList<RateEngine.Benchmarks.Http.HttpRow> rows = RateEngine.Benchmarks.Http.HttpHarness.Run(
            repositoryRoot, Connections, TimeSpan.FromSeconds(4), measure, Rounds, message => Console.WriteLine($"[{clock.Elapsed.TotalSeconds,6:F1}s] {message}"));
        var text = new System.Text.StringBuilder();
        text.AppendLine("# HTTP benchmark: the sample gateway");
        text.AppendLine();
        MachineInfo m = MachineInfo.Read();
        text.AppendLine(System.Globalization.CultureInfo.InvariantCulture,
            $"Measured by `{commandLine}` on {m.Date:yyyy-MM-dd HH:mm} UTC in {clock.Elapsed.TotalSeconds:F0} s: {m.Cpu}, {m.Cores} cores, {m.Os}, {m.Runtime}; Kestrel and the load client share the cores.");
        text.AppendLine();
        RateEngine.Benchmarks.Http.HttpHarness.AppendSection(text, rows, Connections, measure, Rounds);
        Console.Write(text);
        return WriteReport(outputDirectory, "http.md", text);
    }

    /// <summary><c>--estimator</c>: the simulation, its table on the console, and estimator.md.</summary>
    public static int RunEstimator(string outputDirectory, string commandLine)
    {
        EstimatorResult result = EstimatorSimulation.Run(new EstimatorSettings());
        Console.WriteLine(EstimatorReport.Table(result));
        Console.WriteLine();
        Console.WriteLine($"simulated {result.Requests:N0} requests three times in {result.Duration.TotalMilliseconds:F0} ms");
        Console.WriteLine($"wrote {EstimatorReport.Write(result, outputDirectory, commandLine)}");
        return 0;
    }
}
