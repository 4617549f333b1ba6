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
    public override TimeSpan? IdleDuration => ((IPartitionDiagnostics)partitioned).GetIdleDuration(key);

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
