using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using RateEngine.Redis.Telemetry;

namespace RateEngine.Redis;

/// <summary>
/// After a failed call, answers "open" for the cool-down, so the limiter stops calling a dead Redis; the first call after
/// it goes through, and a success closes it. Reports each change of state once (degraded, recovered).
/// </summary>
internal sealed class RedisBreaker(TimeProvider time, TimeSpan cooldown, Action<string> onDegraded, Action<long> onRecovered)
{
    private long _openUntil = long.MinValue;
    private long _failures;
    private int _degraded;

    /// <summary>The breaker of a limiter or policy made with <paramref name="options"/>: logs and meters each change of state once.</summary>
    public static RedisBreaker Create(RedisLimiterOptions options, RedisMetrics metrics)
    {
        ILogger logger = options.LoggerFactory?.CreateLogger("RateEngine.Redis") ?? NullLogger.Instance;
        string prefix = options.KeyPrefix;
        RedisFailureMode failureMode = options.FailureMode;
        TimeSpan cooldown = options.FailureCooldown;
        return new RedisBreaker(
            options.TimeProvider,
            cooldown,
            why =>
            {
                metrics.Degraded(true);
                Log.RedisUnavailable(logger, prefix, why, failureMode, cooldown);
            },
            failures =>
            {
                metrics.Degraded(false);
                Log.RedisRecovered(logger, prefix, failures);
            });
    }

    /// <summary>Failed calls so far (errors and timeouts).</summary>
    public long Failures => Volatile.Read(ref _failures);

    /// <summary>Why the last call failed, for the refusals the open breaker answers.</summary>
    public string LastFailure { get; private set; } = string.Empty;

    /// <summary>Open until the cool-down ends; a closed breaker answers without reading the clock (the hybrid hot path asks).</summary>
    public bool IsOpen => Volatile.Read(ref _openUntil) is var until && until != long.MinValue && time.GetTimestamp() < until;

    /// <summary>A call has failed and none has succeeded since (the breaker may already let calls through again).</summary>
    public bool IsDegraded => Volatile.Read(ref _degraded) == 1;

    public void Trip(string why)
    {
        LastFailure = why;
        Interlocked.Increment(ref _failures);
        long until = time.GetTimestamp() + (long)(cooldown.TotalSeconds * time.TimestampFrequency);
        Volatile.Write(ref _openUntil, until);
        if (Interlocked.Exchange(ref _degraded, 1) == 0)
        {
            onDegraded(why);
        }
    }

    public void Close()
    {
        if (Volatile.Read(ref _openUntil) != long.MinValue)
        {
            Volatile.Write(ref _openUntil, long.MinValue);
        }

        if (Volatile.Read(ref _degraded) == 1 && Interlocked.Exchange(ref _degraded, 0) == 1)
        {
            onRecovered(Failures);
        }
    }
}
