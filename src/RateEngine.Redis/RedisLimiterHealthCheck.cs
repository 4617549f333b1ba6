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
        long failuresBefore = limiter.Failures;
        try
        {
            latency = await limiter.PingAsync(cancellationToken).ConfigureAwait(false);

            // Redis answered: that ends an outage as a request's answer would (unless a call failed meanwhile). Without it a
            // node that a failed check took out of its load balancer's rotation saw no request to close its breaker, and
            // stayed unhealthy while Redis answered.
            limiter.Answered(failuresBefore);
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

    /// <summary>Redis answered a ping sent when the breaker had counted <paramref name="failuresWhenSent"/>: closes it unless tripped since.</summary>
    void Answered(long failuresWhenSent);
}
