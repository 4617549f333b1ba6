using Microsoft.Extensions.Logging;

namespace RateEngine.Redis.Telemetry;

/// <summary>The Redis mode's log events: the degraded state begins and ends, once per transition, not per call.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning,
        Message = "Redis is unavailable for the limiter '{KeyPrefix}' ({Reason}); answering {FailureMode} without calling it for {Cooldown}, then trying again.")]
    public static partial void RedisUnavailable(ILogger logger, string keyPrefix, string reason, RedisFailureMode failureMode, TimeSpan cooldown);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Redis answers the limiter '{KeyPrefix}' again after {Failures} failed calls.")]
    public static partial void RedisRecovered(ILogger logger, string keyPrefix, long failures);
}
