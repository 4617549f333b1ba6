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
            rejected.HttpContext.Features.Get<IRateEngineFeature>() is RequestDecision<TContext> { Lease.IsAcquired: false } decision
                ? RejectionWriter.WriteAsync(rejected.HttpContext, decision, runtime.Options, cancellationToken)
                : previous?.Invoke(rejected, cancellationToken) ?? default;
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
            if (httpContext.Features.Get<IRateEngineFeature>() is null)
            {
                throw new InvalidOperationException(
                    $"RateEngine policy '{name}' was not decided: RateEngine's global limiter did not run (was RateLimiterOptions.GlobalLimiter replaced after AddRateEngine?).");
            }

            return RateLimitPartition.GetNoLimiter(name);
        }
    }
}
