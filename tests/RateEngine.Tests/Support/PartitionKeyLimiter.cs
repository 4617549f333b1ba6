using System.Threading.RateLimiting;
using RateEngine.Partitioning;

namespace RateEngine.Tests.Support;

/// <summary>
/// One key of a partitioned limiter seen as a single limiter, so that the contract suite can run per key. Every call
/// goes to the same key; statistics come from the partitioned limiter's per-key view.
/// </summary>
public sealed class PartitionKeyLimiter(PartitionedRateLimiter<int> partitioned, TimeSpan replenishmentPeriod, int key = 42)
    : ReplenishingRateLimiter
{
    /// <summary>
    /// The partitioned limiter's options for the contract suite: no idle sweep within any test's fake time. The sweep
    /// visits the shard of the key under test only with some seeds (the table's seed is random), and evicting the key
    /// between two readings of its idle time would make a test pass or fail by the seed; eviction has tests of its own.
    /// </summary>
    public static PartitionedLimiterOptions Options(TimeProvider time) =>
        new() { TimeProvider = time, IdleEvictionInterval = TimeSpan.FromDays(3_650) };

    /// <summary>
    /// <see cref="Options"/>; for a <paramref name="hot"/> key, with per-core blocks for hot keys whatever their limit (the
    /// contract's limits are small), on four blocks so that a request on any processor has a home.
    /// </summary>
    public static PartitionedLimiterOptions Options(TimeProvider time, bool hot)
    {
        PartitionedLimiterOptions options = Options(time);
        options.PerCoreReservation = hot ? new PerCoreReservationOptions { Stripes = 4, HotKeyLimitFloor = 1 } : null;
        return options;
    }

    /// <summary>The contract's key of <paramref name="partitioned"/>; a <paramref name="hot"/> one promoted to per-core blocks before its first request.</summary>
    public static PartitionKeyLimiter For(PartitionedRateLimiter<int> partitioned, TimeSpan replenishmentPeriod, bool hot, int key = 42)
    {
        Assert.True(!hot || ((RateEngine.Partitioning.IPartitionDiagnostics)partitioned).Promote(key), "the key was not promoted");
        return new PartitionKeyLimiter(partitioned, replenishmentPeriod, key);
    }

    public override TimeSpan? IdleDuration => ((IPartitionDiagnostics)partitioned).GetIdleDuration(key);

    // What a partitioned key does (the clock replenishes every key; AutoReplenishment is ignored), as the RateLimiter type
    // needs it answered: the contract's replenishment-property tests run on single limiters only, where they can fail.
    public override bool IsAutoReplenishing => true;

    public override TimeSpan ReplenishmentPeriod => replenishmentPeriod;

    public override bool TryReplenish() => false;

    public override RateLimiterStatistics? GetStatistics() => partitioned.GetStatistics(key);

    protected override RateLimitLease AttemptAcquireCore(int permitCount) => partitioned.AttemptAcquire(key, permitCount);

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken) =>
        partitioned.AcquireAsync(key, permitCount, cancellationToken);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            partitioned.Dispose();
        }
    }

    protected override ValueTask DisposeAsyncCore() => partitioned.DisposeAsync();
}
