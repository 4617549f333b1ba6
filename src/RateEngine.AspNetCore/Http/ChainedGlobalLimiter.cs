using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// The app's own global limiter, then RateEngine's, each charged once per request.
/// </summary>
/// <remarks>
/// The in-box chain (<see cref="PartitionedRateLimiter.CreateChained{TResource}"/>) charged the app's limiter twice when
/// RateEngine's synchronous attempt failed (refused, or pending: a context that reads the body, a policy that needs a
/// store's round trip): it disposed the app's lease, and the middleware's wait that follows acquired it again, while a
/// rate limiter does not give permits back on dispose. Here the app's lease from the attempt is kept on the request and
/// handed to the wait. (An in-box endpoint limiter that refuses still makes the middleware dispose and re-acquire the
/// global lease, as it does for any global limiter.)
/// </remarks>
internal sealed class ChainedGlobalLimiter<TContext>(PartitionedRateLimiter<HttpContext> theirs, RateEngineGlobalLimiter<TContext> ours)
    : PartitionedRateLimiter<HttpContext>
{
    public override RateLimiterStatistics? GetStatistics(HttpContext resource) => theirs.GetStatistics(resource);

    protected override RateLimitLease AttemptAcquireCore(HttpContext resource, int permitCount)
    {
        RateLimitLease first = theirs.AttemptAcquire(resource, permitCount);
        if (!first.IsAcquired)
        {
            return first; // refused by the app's limiter: RateEngine is not asked, so it charges nothing
        }

        RateLimitLease second;
        try
        {
            second = ours.AttemptAcquire(resource, permitCount);
        }
        catch
        {
            first.Dispose();
            throw;
        }

        if (second.IsAcquired)
        {
            return new ChainedLease(first, second);
        }

        // The middleware waits on the global limiter after any failed attempt: RateEngine decides there when its attempt was
        // pending, and hands back its refusal when it refused. Either way the app's permit from this attempt goes to that
        // wait, which would otherwise take a second one from a limiter that does not give permits back on dispose.
        var held = new HeldAppLease(first);
        resource.Features.Set(held);
        resource.Response.RegisterForDispose(held); // a wait that never comes (the request failed first) still frees it
        return second;
    }

    protected override async ValueTask<RateLimitLease> AcquireAsyncCore(HttpContext resource, int permitCount, CancellationToken cancellationToken)
    {
        RateLimitLease? first = resource.Features.Get<HeldAppLease>()?.Take();
        resource.Features.Set<HeldAppLease?>(null);
        try
        {
            try
            {
                first ??= await theirs.AcquireAsync(resource, permitCount, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested && TimedOutLease.TimedOut(resource))
            {
                return TimedOutLease.Instance; // the app's queue outwaited the request's timeout: answered as RateEngine's would be
            }

            if (!first.IsAcquired)
            {
                RateLimitLease refused = first;
                first = null;
                return refused;
            }

            RateLimitLease second = await ours.AcquireAsync(resource, permitCount, cancellationToken).ConfigureAwait(false);
            if (!second.IsAcquired)
            {
                return second; // the app's permit is released below, as the in-box chain does on a later refusal
            }

            var both = new ChainedLease(first, second);
            first = null;
            return both;
        }
        finally
        {
            first?.Dispose();
        }
    }

    /// <summary>The app's lease from the synchronous attempt, waiting for the asynchronous acquire to take it.</summary>
    private sealed class HeldAppLease(RateLimitLease lease) : IDisposable
    {
        private RateLimitLease? _lease = lease;

        public RateLimitLease? Take() => Interlocked.Exchange(ref _lease, null);

        public void Dispose() => Take()?.Dispose();
    }

    /// <summary>Both leases as one: metadata from either (the app's first), and disposing ends both.</summary>
    private sealed class ChainedLease(RateLimitLease first, RateLimitLease second) : RateLimitLease
    {
        public override bool IsAcquired => true;

        public override IEnumerable<string> MetadataNames => first.MetadataNames.Concat(second.MetadataNames).Distinct(StringComparer.Ordinal);

        public override bool TryGetMetadata(string metadataName, out object? metadata) =>
            first.TryGetMetadata(metadataName, out metadata) || second.TryGetMetadata(metadataName, out metadata);

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                try
                {
                    second.Dispose();
                }
                finally
                {
                    first.Dispose();
                }
            }
        }
    }
}
