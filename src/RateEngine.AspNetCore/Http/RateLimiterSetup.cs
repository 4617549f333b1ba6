using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Options;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// Wires RateEngine into the in-box middleware's options after the app's own configuration: its global limiter (which
/// decides every RateEngine policy of a request at once), a named policy per registered policy, and the rejection writer.
/// </summary>
internal sealed class RateLimiterSetup<TContext>(RateEngineRuntime<TContext> runtime) : IPostConfigureOptions<RateLimiterOptions>
{
    public void PostConfigure(string? name, RateLimiterOptions options)
    {
        var ours = new RateEngineGlobalLimiter<TContext>(runtime);
        options.GlobalLimiter = options.GlobalLimiter is { } theirs ? new ChainedGlobalLimiter<TContext>(theirs, ours) : ours;

        foreach (string policy in runtime.Policies.Names)
        {
            options.AddPolicy(policy, new DecidedPolicy(policy));
        }

        Func<OnRejectedContext, CancellationToken, ValueTask>? previous = options.OnRejected;
        options.OnRejected = (rejected, cancellationToken) =>
        {
            TimedOutLease.ThrowIfTimedOut(rejected.HttpContext, rejected.Lease);
            return rejected.HttpContext.Features.Get<IRateEngineFeature>() is not RequestDecision<TContext> decision
                ? previous?.Invoke(rejected, cancellationToken) ?? default
                : decision.Lease.IsAcquired
                    ? RefusedElsewhereAsync(decision, rejected, previous, cancellationToken)
                    : RejectionWriter.WriteAsync(rejected.HttpContext, decision, runtime.Options, cancellationToken);
        };
    }

    /// <summary>Another limiter of the request refused it after RateEngine admitted it: RateEngine's estimate comes back, and the app's handler answers.</summary>
    private static async ValueTask RefusedElsewhereAsync(
        RequestDecision<TContext> decision, OnRejectedContext rejected, Func<OnRejectedContext, CancellationToken, ValueTask>? previous, CancellationToken cancellationToken)
    {
        await decision.RefusedElsewhereAsync().ConfigureAwait(false);
        if (previous is not null)
        {
            await previous(rejected, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// A RateEngine policy as the in-box endpoint limiter sees it: the global limiter decided it already, together with the
    /// global policies, so here it admits (a request refused there never gets here).
    /// </summary>
    private sealed class DecidedPolicy(string name) : IRateLimiterPolicy<string>
    {
        public Func<OnRejectedContext, CancellationToken, ValueTask>? OnRejected => null;

        public RateLimitPartition<string> GetPartition(HttpContext httpContext)
        {
            // A request whose decision threw reaches here only in the pass re-executed for its error page, which runs
            // without a decision (deciding again would throw again and lose the page).
            if (httpContext.Features.Get<IRateEngineFeature>() is null && !RateEngineRuntime<TContext>.DecisionFailed(httpContext))
            {
                throw new InvalidOperationException(
                    $"RateEngine policy '{name}' was not decided: RateEngine's global limiter did not run (was RateLimiterOptions.GlobalLimiter replaced after AddRateEngine?).");
            }

            return RateLimitPartition.GetNoLimiter(name);
        }
    }
}
