using System.Threading.RateLimiting;
using RateEngine.Limiters;

namespace RateEngine.Policies;

/// <summary>
/// A <see cref="RatePolicy{TContext}"/> behind the BCL's <see cref="PartitionedRateLimiter{TResource}"/>: one acquire is one
/// policy decision for <c>permitCount</c> requests; zero permits is a probe that reserves nothing.
/// </summary>
internal sealed class PolicyRateLimiter<TContext>(RatePolicy<TContext> policy, Func<TContext, RequestCost>? estimate) : PartitionedRateLimiter<TContext>
{
    private readonly LeaseCounters _counters = new();

    public override RateLimiterStatistics? GetStatistics(TContext resource)
    {
        policy.ThrowIfDisposed();
        long available = long.MaxValue;
        foreach (string name in policy.LayerNames)
        {
            LayerUsage usage = policy.GetUsage(resource, name);
            available = Math.Min(available, usage.Remaining);
        }

        return _counters.Statistics(available, 0);
    }

    protected override RateLimitLease AttemptAcquireCore(TContext resource, int permitCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(permitCount);
        RequestCost cost = estimate?.Invoke(resource) ?? RequestCost.None;
        cost.ThrowIfNegative(nameof(estimate));
        PolicyLease lease = policy.AcquireCore(resource, cost, permitCount);
        if (lease.IsAcquired)
        {
            _counters.Succeeded();
        }
        else
        {
            _counters.Failed();
        }

        return lease;
    }

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(TContext resource, int permitCount, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<RateLimitLease>(cancellationToken);
        }

        return new ValueTask<RateLimitLease>(AttemptAcquireCore(resource, permitCount));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            policy.Dispose();
        }
    }

    protected override ValueTask DisposeAsyncCore()
    {
        policy.Dispose();
        return default;
    }
}
