namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// One design's throughput run (a limit never reached): admissions per second of all nodes, what Redis counted in
/// <c>INFO commandstats</c> per 1,000 admissions, and the latency of every acquire and of those answered without waiting
/// (served from a local block: the acquire's task was complete when it returned).
/// </summary>
internal sealed record RedisThroughput(
    string Design,
    int Keys,
    double AdmissionsPerSecond,
    long Refused,
    IReadOnlyDictionary<string, long>? Commands,
    double CommandsPerThousand,
    double RoundTripsPerThousand,
    double P50Microseconds,
    double P99Microseconds,
    double LocalShare,
    double LocalP50Microseconds,
    double LocalP99Microseconds)
{
    /// <summary>How long the callers ran before the measured part.</summary>
    public TimeSpan WarmUp { get; init; }

    /// <summary>How far into its window the measured part began, by the server's clock (null for a design without Redis).</summary>
    public TimeSpan? MeasuredFrom { get; init; }
}

/// <summary>
/// One design's saturation run: the most admissions any window held past the cap (over), and the mean shortfall below the
/// cap over the full windows whose demand exceeded it (under, as a share of the cap).
/// </summary>
internal sealed record RedisSaturation(
    string Design, int Keys, int Cap, TimeSpan Window, long OverMax, double UnderShare, int SaturatedWindows, double AdmittedPerWindow);

/// <summary>The section's runs: the limiters' throughput and saturation, and the layered policy's throughput on 10k users.</summary>
internal sealed record RedisResult(IReadOnlyList<RedisThroughput> Throughput, IReadOnlyList<RedisSaturation> Saturation, IReadOnlyList<RedisThroughput> Policy, TimeSpan Duration)
{
    /// <summary>The median empty pair of clock readings, taken off every latency sample.</summary>
    public double TimerPairNanoseconds { get; init; }
}
