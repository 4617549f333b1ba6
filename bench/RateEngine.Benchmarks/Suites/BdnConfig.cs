using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;

namespace RateEngine.Benchmarks.Suites;

/// <summary>The configuration every BenchmarkDotNet run gets on top of the suites' own attributes.</summary>
internal static class BdnConfig
{
    /// <summary>Defaults plus an Op/s column (for the contention suite it is the total over all threads).</summary>
    public static IConfig Create() => DefaultConfig.Instance.AddColumn(StatisticColumn.OperationsPerSecond);
}
