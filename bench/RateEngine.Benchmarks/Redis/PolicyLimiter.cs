using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// A layered policy behind the harness's limiter shape: one acquire is a gateway request's whole policy work, the
/// reservation of its estimate and, when admitted, the reconcile of its actual cost (what a request costs the store).
/// </summary>
internal sealed class PolicyLimiter(IRatePolicy<string> policy) : PartitionedRateLimiter<string>
{
    /// <summary>What a request reserves: a model call's tokens and micro-dollars.</summary>
    public static readonly RequestCost Estimate = new(100, 10);

    /// <summary>What it turns out to cost: less, so every reconcile refunds.</summary>
    public static readonly RequestCost Actual = new(60, 6);

    public override RateLimiterStatistics? GetStatistics(string resource) => null;

    protected override RateLimitLease AttemptAcquireCore(string resource, int permitCount) =>
        throw new NotSupportedException("The harness acquires asynchronously.");

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(string resource, int permitCount, CancellationToken cancellationToken)
    {
        ValueTask<PolicyLease> acquire = policy.AcquireAsync(resource, Estimate, cancellationToken);
        return acquire.IsCompletedSuccessfully && acquire.Result is { IsAcquired: false } refused
            ? new ValueTask<RateLimitLease>(refused)
            : Settle(acquire);
    }

    protected override void Dispose(bool disposing) => policy.Dispose();

    protected override ValueTask DisposeAsyncCore()
    {
        policy.Dispose();
        return default;
    }

    private static async ValueTask<RateLimitLease> Settle(ValueTask<PolicyLease> acquire)
    {
        PolicyLease lease = await acquire.ConfigureAwait(false);
        if (lease.IsAcquired)
        {
            await lease.ReconcileAsync(Actual).ConfigureAwait(false);
        }

        return lease;
    }
}
