using System.Reflection;
using BenchmarkDotNet.Attributes;
using RateEngine.Benchmarks.Compare;

namespace RateEngine.Benchmarks;

/// <summary>
/// <c>--smoke</c>: runs in seconds and touches everything the real modes run, so that they cannot rot unnoticed. Every
/// BenchmarkDotNet benchmark is invoked a few times directly (with each of its parameter values, through its own global
/// setup and cleanup, and its iteration setup and cleanup around each invocation, so the admit/reject checks run), then
/// the compare mode runs with tiny counts (partitions included) into a temp directory.
/// Any exception makes the exit code non-zero.
/// </summary>
internal static class Smoke
{
    private const int Invocations = 3;

    /// <summary>New keys per first-touch invocation of the <see cref="Suites.Partitioned"/> suite here (a million in BenchmarkDotNet).</summary>
    private const int PartitionKeys = 2_000;

    public static int Run()
    {
        Suites.Partitioned.FirstTouchKeyCount = PartitionKeys;
        int benchmarks = 0;
        foreach (Type type in typeof(Smoke).Assembly.GetTypes().Where(t => t is { IsClass: true, IsAbstract: false, IsPublic: true }))
        {
            MethodInfo[] methods = [.. type.GetMethods().Where(m => m.IsDefined(typeof(BenchmarkAttribute)))];
            if (methods.Length == 0)
            {
                continue;
            }

            foreach (Action<object> applyParameters in ParameterSets(type))
            {
                object suite = Activator.CreateInstance(type)!;
                applyParameters(suite);
                InvokeAll<GlobalSetupAttribute>(suite);
                try
                {
                    foreach (MethodInfo method in methods)
                    {
                        for (int i = 0; i < Invocations; i++)
                        {
                            InvokeTargeted<IterationSetupAttribute>(suite, method);
                            Invoke(method, suite);
                            InvokeTargeted<IterationCleanupAttribute>(suite, method);
                        }

                        benchmarks++;
                    }
                }
                finally
                {
                    InvokeAll<GlobalCleanupAttribute>(suite);
                }
            }

            Console.WriteLine($"smoke: {type.Name}: {methods.Length} benchmarks ok");
        }

        string output = Path.Combine(Path.GetTempPath(), $"rateengine-bench-smoke-{Environment.ProcessId}");
        try
        {
            Program.RunCompare(CompareSettings.Smoke(output), "dotnet run -c Release --project bench/RateEngine.Benchmarks -- --smoke");
            Program.RunEstimator(output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- --smoke");
            Program.RunClock(output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- --smoke", rounds: 1, runMilliseconds: 1, lagSeconds: 0.05);
            RateEngine.Benchmarks.PerCore.PerCoreHarness.Run(output, "dotnet run -c Release --project bench/RateEngine.Benchmarks -- --smoke", rounds: 1, runMilliseconds: 2);
            foreach (string file in new[] { "compare.md", "compare.png", "estimator.md", "clock.md", "percore.md" })
            {
                var info = new FileInfo(Path.Combine(output, file));
                Check.That(info.Exists && info.Length > 0, $"smoke: {file} was not written");
            }

            Check.That(
                File.ReadAllText(Path.Combine(output, "compare.md")).Contains("estimator simulation", StringComparison.Ordinal),
                "smoke: compare.md has no estimator section");
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }

        Console.WriteLine($"smoke: ok ({benchmarks} benchmark/parameter combinations, compare mode, report and chart, estimator simulation, clock mode)");
        return 0;
    }

    /// <summary>One setter per value of the suite's [Params] property (only one such property is supported).</summary>
    private static IEnumerable<Action<object>> ParameterSets(Type type)
    {
        PropertyInfo? parameter = type.GetProperties().SingleOrDefault(p => p.IsDefined(typeof(ParamsAttribute)));
        if (parameter is null)
        {
            return [_ => { }];
        }

        object?[] values = parameter.GetCustomAttribute<ParamsAttribute>()!.Values;
        return values.Select(v => (Action<object>)(suite => parameter.SetValue(suite, v)));
    }

    private static void InvokeAll<TAttribute>(object suite)
        where TAttribute : Attribute
    {
        foreach (MethodInfo method in suite.GetType().GetMethods().Where(m => m.IsDefined(typeof(TAttribute))))
        {
            Invoke(method, suite);
        }
    }

    /// <summary>The iteration setup or cleanup methods that apply to <paramref name="benchmark"/> (no targets: all).</summary>
    private static void InvokeTargeted<TAttribute>(object suite, MethodInfo benchmark)
        where TAttribute : TargetedAttribute
    {
        foreach (MethodInfo method in suite.GetType().GetMethods())
        {
            if (method.GetCustomAttribute<TAttribute>() is { } attribute
                && (attribute.Targets is not { Length: > 0 } targets || targets.Contains(benchmark.Name)))
            {
                Invoke(method, suite);
            }
        }
    }

    private static void Invoke(MethodInfo method, object suite)
    {
        try
        {
            method.Invoke(suite, null);
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw new InvalidOperationException($"{suite.GetType().Name}.{method.Name} failed: {e.InnerException.Message}", e.InnerException);
        }
    }
}
