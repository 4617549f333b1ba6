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

    /// <remarks>
    /// The available permits are what one acquire of <paramref name="resource"/> could take now, as the policy would decide
    /// it: none while the policy is paused; at most what each hard request layer has left; and none if a cost layer has less
    /// left than the resource's estimate (it charges the estimate once per acquire, whatever the permit count; a zero estimate
    /// passes while anything is left). Soft layers never refuse, so they do not count. A probe (zero permits) reserves nothing
    /// on cost layers, so it asks only whether they have anything left: it may pass where this says 0 because one request's
    /// estimate would not fit.
    /// </remarks>
    public override RateLimiterStatistics? GetStatistics(TContext resource)
    {
        policy.ThrowIfDisposed();
        if (policy.IsPaused)
        {
            return _counters.Statistics(0, 0);
        }

        RequestCost cost = estimate?.Invoke(resource) ?? RequestCost.None;
        long now = policy.Clock.Now();
        long available = long.MaxValue;
        for (int i = 0; i < policy.LayerCount && available > 0; i++)
        {
            PolicyLayer<TContext> layer = policy[i];
            if (layer.IsSoft)
            {
                continue;
            }

            long remaining = layer.GetUsage(resource, now).Remaining;
            if (layer.Meter == PolicyMeter.Requests)
            {
                available = Math.Min(available, remaining);
            }
            else if (remaining < Math.Max(1, cost.On(layer.Meter)))
            {
                available = 0;
            }
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
