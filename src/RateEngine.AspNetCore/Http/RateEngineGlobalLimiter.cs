using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;

namespace RateEngine.AspNetCore.Http;

/// <summary>The in-box middleware's global limiter: every RateEngine decision of a request happens here, once.</summary>
internal sealed class RateEngineGlobalLimiter<TContext>(RateEngineRuntime<TContext> runtime) : PartitionedRateLimiter<HttpContext>
{
    public override RateLimiterStatistics? GetStatistics(HttpContext resource) => null;

    protected override RateLimitLease AttemptAcquireCore(HttpContext resource, int permitCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(permitCount);
        return permitCount == 0 ? NoPolicyLease.Instance : runtime.AttemptAcquire(resource);
    }

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(HttpContext resource, int permitCount, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(permitCount);
        return permitCount == 0 ? new ValueTask<RateLimitLease>(NoPolicyLease.Instance) : runtime.AcquireAsync(resource, cancellationToken);
    }
}
