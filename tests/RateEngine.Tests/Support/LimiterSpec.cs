using System.Threading.RateLimiting;

namespace RateEngine.Tests.Support;

public enum LimiterKind
{
    Log,
    Counter,
    Fixed,
    Bucket,
}

/// <summary>
/// One limiter configuration, in the ticks of a <see cref="Microsoft.Extensions.Time.Testing.FakeTimeProvider"/>
/// (100 ns, the same unit as the limiter's own clock on that provider).
/// </summary>
public sealed partial record LimiterSpec(
    LimiterKind Kind,
    int Limit,
    long WindowTicks,
    int Segments = 1,
    int TokensPerPeriod = 1,
    int QueueLimit = 0,
    QueueProcessingOrder Order = QueueProcessingOrder.OldestFirst,
    int PerCoreBlock = 0,
    int PerCoreStripes = 0,
    bool Manual = false)
{
    /// <summary>The limiter; with <see cref="PerCoreBlock"/> set, one that hands permits out from per-core blocks of at most that size.</summary>
    public RateEngineLimiter Create(TimeProvider time)
    {
        PerCoreReservationOptions? perCore = null;
        if (PerCoreBlock > 0)
        {
            perCore = new PerCoreReservationOptions { MaxBlockSize = PerCoreBlock };
            SetStripes(perCore, PerCoreStripes);
        }

        return (Kind, perCore) switch
        {
            (LimiterKind.Log, null) => new SlidingWindowLogRateLimiter(LogOptions(), time),
            (LimiterKind.Log, _) => new SlidingWindowLogRateLimiter(LogOptions(), perCore, time),
            (LimiterKind.Counter, null) => new SlidingWindowCounterRateLimiter(CounterOptions(), time),
            (LimiterKind.Counter, _) => new SlidingWindowCounterRateLimiter(CounterOptions(), perCore, time),
            (LimiterKind.Fixed, null) => new LockFreeFixedWindowRateLimiter(FixedOptions(), time),
            (LimiterKind.Fixed, _) => new LockFreeFixedWindowRateLimiter(FixedOptions(), perCore, time),
            (LimiterKind.Bucket, null) => new LockFreeTokenBucketRateLimiter(BucketOptions(), time),
            (LimiterKind.Bucket, _) => new LockFreeTokenBucketRateLimiter(BucketOptions(), perCore, time),
            _ => throw new ArgumentOutOfRangeException(nameof(Kind), Kind, null),
        };
    }

    /// <summary>A partitioned limiter whose every key (the resource itself) gets this spec's limit.</summary>
    public PartitionedRateLimiter<int> CreatePartitioned(TimeProvider time, int maxPartitions = 1 << 20, PerCoreReservationOptions? hotKeys = null)
    {
        var settings = new PartitionedLimiterOptions { TimeProvider = time, MaxPartitions = maxPartitions, PerCoreReservation = hotKeys };
        return Kind switch
        {
            LimiterKind.Log => PartitionedLimiter.CreateSlidingWindowLog<int, int>(key => key, Shared(LogOptions()), settings),
            LimiterKind.Counter => PartitionedLimiter.CreateSlidingWindowCounter<int, int>(key => key, Shared(CounterOptions()), settings),
            LimiterKind.Fixed => PartitionedLimiter.CreateFixedWindow<int, int>(key => key, Shared(FixedOptions()), settings),
            LimiterKind.Bucket => PartitionedLimiter.CreateTokenBucket<int, int>(key => key, Shared(BucketOptions()), settings),
            _ => throw new ArgumentOutOfRangeException(nameof(Kind)),
        };

        static Func<int, T> Shared<T>(T options) => _ => options;
    }

    private SlidingWindowLogRateLimiterOptions LogOptions() => !Manual ? new()
    {
        PermitLimit = Limit,
        Window = TimeSpan.FromTicks(WindowTicks),
        QueueLimit = QueueLimit,
        QueueProcessingOrder = Order,
    }
    : throw new InvalidOperationException("The log always replenishes itself: it has no manual mode.");

    private SlidingWindowCounterRateLimiterOptions CounterOptions() => new()
    {
        PermitLimit = Limit,
        Window = TimeSpan.FromTicks(WindowTicks),
        SegmentsPerWindow = Segments,
        QueueLimit = QueueLimit,
        QueueProcessingOrder = Order,
        AutoReplenishment = !Manual,
    };

    private FixedWindowRateLimiterOptions FixedOptions() => new()
    {
        PermitLimit = Limit,
        Window = TimeSpan.FromTicks(WindowTicks),
        QueueLimit = QueueLimit,
        QueueProcessingOrder = Order,
        AutoReplenishment = !Manual,
    };

    private TokenBucketRateLimiterOptions BucketOptions() => new()
    {
        TokenLimit = Limit,
        TokensPerPeriod = TokensPerPeriod,
        ReplenishmentPeriod = TimeSpan.FromTicks(WindowTicks),
        QueueLimit = QueueLimit,
        QueueProcessingOrder = Order,
        AutoReplenishment = !Manual,
    };

    /// <summary>
    /// Sets the number of per-core blocks (an internal option: implemented where the tests see RateEngine's internals, and
    /// left out, with the default of one block per processor, where this file is linked into other test projects).
    /// </summary>
    static partial void SetStripes(PerCoreReservationOptions options, int stripes);

    /// <summary>The counter's segment length as the limiter computes it (rounded up).</summary>
    public long SegmentTicks => (WindowTicks + Segments - 1) / Segments;

    /// <summary>Ticks after which every permit taken so far is surely back.</summary>
    public long FullRefillTicks => Kind switch
    {
        LimiterKind.Counter => WindowTicks + (2 * SegmentTicks),
        LimiterKind.Bucket => (((long)Limit + TokensPerPeriod - 1) / TokensPerPeriod) * WindowTicks,
        _ => WindowTicks,
    };
}
