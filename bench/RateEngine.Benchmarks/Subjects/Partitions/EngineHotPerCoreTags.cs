using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>
/// RateEngine's partitioned limiters with per-core blocks for hot keys (<see cref="PartitionedLimiterOptions.PerCoreReservation"/>,
/// default options): the <c>--percore</c> mode's hot-key rows. One tag per family, so each gets its own compiled loops.
/// </summary>
internal static class EngineHotPerCore
{
    public static PartitionedLimiterOptions Options()
    {
        PartitionedLimiterOptions options = PartitionSetup.EngineOptions();
        options.PerCoreReservation = new PerCoreReservationOptions();
        return options;
    }
}

/// <summary>The fixed window per key, hot keys with per-core blocks.</summary>
internal readonly struct EngineFixedPerCoreTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.FixedWindow;

    public static string Name => "PartitionedLimiter.CreateFixedWindow, hot keys per core";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull =>
        PartitionedLimiter.CreateFixedWindow<TKey, TKey>(static key => key, held ? static _ => PartitionSetup.HeldFixed : static _ => PartitionSetup.HotFixed, EngineHotPerCore.Options());
}

/// <summary>The token bucket per key, hot keys with per-core blocks.</summary>
internal readonly struct EngineBucketPerCoreTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.TokenBucket;

    public static string Name => "PartitionedLimiter.CreateTokenBucket, hot keys per core";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull =>
        PartitionedLimiter.CreateTokenBucket<TKey, TKey>(static key => key, held ? static _ => PartitionSetup.HeldBucket : static _ => PartitionSetup.HotBucket, EngineHotPerCore.Options());
}

/// <summary>The sliding-window counter per key, hot keys with per-core blocks.</summary>
internal readonly struct EngineCounterPerCoreTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.SlidingWindow;

    public static string Name => "PartitionedLimiter.CreateSlidingWindowCounter, hot keys per core";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull =>
        PartitionedLimiter.CreateSlidingWindowCounter<TKey, TKey>(static key => key, held ? static _ => PartitionSetup.HeldCounter : static _ => PartitionSetup.HotCounter, EngineHotPerCore.Options());
}
