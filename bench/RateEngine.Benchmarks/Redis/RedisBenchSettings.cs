namespace RateEngine.Benchmarks.Redis;

/// <summary>How long the Redis section runs: the full <c>--redis</c> mode, or the short one the compare mode appends.</summary>
internal sealed record RedisBenchSettings
{
    public const int Nodes = 4;
    public const int CallersPerNode = 16;
    public const int ManyKeys = 10_000;

    /// <summary>Before a throughput run's measured part: JIT tiers up, and the hybrid mode's blocks grow to steady state.</summary>
    public TimeSpan WarmUp { get; init; } = TimeSpan.FromSeconds(0.7);

    public TimeSpan Measure { get; init; } = TimeSpan.FromSeconds(1.5);

    /// <summary>10k keys take longer to reach steady state: each key and node sees 1/40,000 of the traffic.</summary>
    public TimeSpan ManyKeysWarmUp { get; init; } = TimeSpan.FromSeconds(2);

    public TimeSpan ManyKeysMeasure { get; init; } = TimeSpan.FromSeconds(1.5);

    /// <summary>
    /// The hybrid mode's warm-up on 10k keys. Its blocks double per block, so a measured stretch sees about one reservation
    /// per key and node per current block's lifetime (about half the time since the key's first touch): round trips per
    /// 1,000 admissions fall as 2,000 / (admissions per second per key and node × seconds warmed), and reach 10 only after
    /// some 200 admissions per key and node. The other designs keep no local state and need no more than the JIT's warm-up.
    /// </summary>
    public TimeSpan ManyKeysHybridWarmUp { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// How far into a window a hybrid run's measured part starts at the earliest (zero: wherever the warm-up ends). The
    /// compare mode's short section, whose warm-ups are far from a steady state anyway, does not wait for it.
    /// </summary>
    public TimeSpan HybridSteadyAfter { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Saturation on one key: <see cref="OneKeyCap"/> permits per window of this length, callers hammering it.</summary>
    public TimeSpan OneKeyWindow { get; init; } = TimeSpan.FromMilliseconds(500);

    public int OneKeyCap { get; init; } = 50;

    public TimeSpan OneKeySaturation { get; init; } = TimeSpan.FromSeconds(2.6);

    /// <summary>Saturation on 10k keys: a small cap per key and a long window, so that even the slowest design's demand per key exceeds it.</summary>
    public TimeSpan ManyKeysWindow { get; init; } = TimeSpan.FromSeconds(1);

    public int ManyKeysCap { get; init; } = 2;

    /// <summary>Zero skips the 10k-key saturation run (the compare mode's budget).</summary>
    public TimeSpan ManyKeysSaturation { get; init; } = TimeSpan.FromSeconds(3.2);

    /// <summary>The compare mode's section: the same runs, shorter, and no 10k-key saturation (about 15 s in all).</summary>
    public static RedisBenchSettings Compare { get; } = new()
    {
        WarmUp = TimeSpan.FromSeconds(0.3),
        Measure = TimeSpan.FromSeconds(0.5),
        ManyKeysWarmUp = TimeSpan.FromSeconds(0.5),
        ManyKeysMeasure = TimeSpan.FromSeconds(0.5),
        ManyKeysHybridWarmUp = TimeSpan.FromSeconds(0.5),
        HybridSteadyAfter = TimeSpan.Zero,
        OneKeyWindow = TimeSpan.FromMilliseconds(200),
        OneKeyCap = 20,
        OneKeySaturation = TimeSpan.FromSeconds(1.1),
        ManyKeysSaturation = TimeSpan.Zero,
    };

    /// <summary>The compare mode's section, or the smoke run's.</summary>
    public static RedisBenchSettings ForCompare(bool smoke) => smoke ? Smoke : Compare;

    /// <summary>The smoke run: everything once, tiny.</summary>
    public static RedisBenchSettings Smoke { get; } = Compare with
    {
        WarmUp = TimeSpan.FromMilliseconds(50),
        Measure = TimeSpan.FromMilliseconds(100),
        ManyKeysWarmUp = TimeSpan.FromMilliseconds(50),
        ManyKeysMeasure = TimeSpan.FromMilliseconds(100),
        ManyKeysHybridWarmUp = TimeSpan.FromMilliseconds(50),
        OneKeySaturation = TimeSpan.FromMilliseconds(450),
    };
}
