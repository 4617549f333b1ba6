using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace RateEngine.Redis;

/// <summary>
/// The health of Redis-backed limiters (<see cref="RedisLimiter.HealthCheck{TResource}(System.Threading.RateLimiting.PartitionedRateLimiter{TResource})"/>): a <c>PING</c> through the
/// limiter's connection, bounded by its <see cref="RedisLimiterOptions.SyncTimeout"/>, and whether its breaker is open.
/// </summary>
/// <remarks>
/// Healthy while Redis answers and the breaker is closed. Otherwise the limiter answers by its failure mode: Unhealthy
/// for <see cref="RedisFailureMode.FailClosed"/> (every request is refused), Degraded for
/// <see cref="RedisFailureMode.FailOpen"/> and <see cref="RedisFailureMode.LocalFallback"/>. The result's data carry
/// the key prefix, the failure mode, the failures so far and the last one; never a partition key.
/// </remarks>
internal sealed class RedisLimiterHealthCheck(IRedisLimiterHealth limiter) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        string? pingFailure = null;
        TimeSpan latency = TimeSpan.Zero;
        try
        {
            latency = await limiter.PingAsync(cancellationToken).ConfigureAwait(false);

            // Redis answers a PING: the check takes the cool-down's probe itself when no request has, a write routed as the
            // scripts are. A node that a failed check took out of its load balancer's rotation sees no request to end its
            // outage, and stayed unhealthy while Redis answered; a PING alone would close it while scripts still fail.
            await limiter.ProbeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception exception) when (exception is StackExchange.Redis.RedisException or TimeoutException)
        {
            pingFailure = exception.Message;
        }

        var data = new Dictionary<string, object>(StringComparer.Ordinal)
        {
            ["keyPrefix"] = limiter.KeyPrefix,
            ["failureMode"] = limiter.FailureMode.ToString(),
            ["failures"] = limiter.Failures,
        };
        if (pingFailure is null && !limiter.IsDegraded)
        {
            return HealthCheckResult.Healthy($"Redis answers ({latency.TotalMilliseconds:F1} ms).", data);
        }

        string why = pingFailure ?? limiter.LastFailure;
        data["lastFailure"] = why;
        string description = $"Redis is unavailable ({why}): the limiters answer {limiter.FailureMode}.";
        return limiter.FailureMode == RedisFailureMode.FailClosed
            ? new HealthCheckResult(context.Registration?.FailureStatus ?? HealthStatus.Unhealthy, description, data: data)
            : HealthCheckResult.Degraded(description, data: data);
    }
}

/// <summary>What the health check reads of a Redis-backed limiter.</summary>
internal interface IRedisLimiterHealth
{
    string KeyPrefix { get; }

    RedisFailureMode FailureMode { get; }

    bool IsDegraded { get; }

    string LastFailure { get; }

    long Failures { get; }

    Task<TimeSpan> PingAsync(CancellationToken cancellationToken);

    /// <summary>
    /// While degraded, once the cool-down hands the check the probe: one write to the limiter's health key (its answer closes
    /// the breaker, unless a call failed meanwhile; its failure gives the probe back to the next request). Nothing otherwise.
    /// </summary>
    Task ProbeAsync(CancellationToken cancellationToken);
}
