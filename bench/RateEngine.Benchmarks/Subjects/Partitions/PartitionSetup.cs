using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>
/// The options and counts every partition benchmark uses (compare mode, BenchmarkDotNet and smoke), in one place; each
/// <see cref="IPartitionTag"/> builds its limiter from them.
/// </summary>
/// <remarks>
/// <para><b>First touch and memory</b> (<see cref="IPartitionTag.Create{TKey}"/> with <c>held: true</c>): every key gets a limit it
/// cannot use up and that does not come back during a run: <c>int.MaxValue</c> permits per 1 h window (10 segments for
/// the sliding windows), and a token bucket of <see cref="HeldTokenLimit"/> tokens refilled one per hour. So a key that
/// took one permit stays held (not idle) on both sides: nothing is evicted while it is measured.</para>
/// <para><b>Hot keys</b> (<c>held: false</c>): the admit-path options of the single limiters (<see cref="LimiterSetup"/>:
/// <c>int.MaxValue</c> per 1 s, the bucket refilled <c>int.MaxValue</c> tokens per second), which no run can exhaust
/// however long it lasts.</para>
/// <para>RateEngine gets <c>MaxPartitions</c> = <see cref="MaxPartitions"/>, twice the most keys any benchmark creates, so
/// that no key is refused; the in-box limiter has no bound. Options are shared instances (one tier on RateEngine's side;
/// a non-capturing, cached delegate on the in-box side), as an application with one limit for every key would write them.</para>
/// </remarks>
internal static class PartitionSetup
{
    /// <summary>Distinct keys of the first-touch and memory measurements.</summary>
    public const int FirstTouchKeys = 1_000_000;

    /// <summary>Keys of the hot-key measurement.</summary>
    public const int HotKeys = 1_000;

    /// <summary>RateEngine's <c>MaxPartitions</c>: well above every key count used here.</summary>
    public const int MaxPartitions = 2 * FirstTouchKeys;

    /// <summary>Bucket size of the held token bucket: its burst (in clock ticks) fits RateEngine's horizon unsaturated.</summary>
    public const int HeldTokenLimit = 100_000;

    public static readonly TimeSpan HeldWindow = TimeSpan.FromHours(1);

    public static readonly FixedWindowRateLimiterOptions HeldFixed = new()
    {
        PermitLimit = int.MaxValue, Window = HeldWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    public static readonly TokenBucketRateLimiterOptions HeldBucket = new()
    {
        TokenLimit = HeldTokenLimit, TokensPerPeriod = 1, ReplenishmentPeriod = HeldWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    public static readonly SlidingWindowRateLimiterOptions HeldInboxSliding = new()
    {
        PermitLimit = int.MaxValue, Window = HeldWindow, SegmentsPerWindow = LimiterSetup.Segments, QueueLimit = 0, AutoReplenishment = true,
    };

    public static readonly SlidingWindowCounterRateLimiterOptions HeldCounter = new()
    {
        PermitLimit = int.MaxValue, Window = HeldWindow, SegmentsPerWindow = LimiterSetup.Segments, QueueLimit = 0,
    };

    public static readonly FixedWindowRateLimiterOptions HotFixed = new()
    {
        PermitLimit = int.MaxValue, Window = LimiterSetup.AdmitWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    public static readonly TokenBucketRateLimiterOptions HotBucket = new()
    {
        TokenLimit = int.MaxValue, TokensPerPeriod = int.MaxValue, ReplenishmentPeriod = LimiterSetup.AdmitWindow, QueueLimit = 0, AutoReplenishment = true,
    };

    public static readonly SlidingWindowRateLimiterOptions HotInboxSliding = new()
    {
        PermitLimit = int.MaxValue, Window = LimiterSetup.AdmitWindow, SegmentsPerWindow = LimiterSetup.Segments, QueueLimit = 0, AutoReplenishment = true,
    };

    public static readonly SlidingWindowCounterRateLimiterOptions HotCounter = new()
    {
        PermitLimit = int.MaxValue, Window = LimiterSetup.AdmitWindow, SegmentsPerWindow = LimiterSetup.Segments, QueueLimit = 0,
    };

    /// <summary>RateEngine's table options: a new instance per limiter, as each limiter would be configured on its own.</summary>
    public static PartitionedLimiterOptions EngineOptions() => new() { MaxPartitions = MaxPartitions };

    /// <summary>Keys held by a RateEngine partitioned limiter (null for an in-box one, which does not say).</summary>
    public static long? PartitionCount<TKey>(PartitionedRateLimiter<TKey> limiter) =>
        (limiter as RateEngine.Partitioning.IPartitionDiagnostics)?.PartitionCount;
}
