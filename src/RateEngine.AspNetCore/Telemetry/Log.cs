using Microsoft.Extensions.Logging;

namespace RateEngine.AspNetCore.Telemetry;

internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Debug, "Request refused by RateEngine policy {Policy}, layer {Layer}: {Reason} (service-wide: {ServiceWide})", EventName = "RequestRejected")]
    public static partial void RequestRejected(ILogger logger, string policy, string layer, string reason, bool serviceWide);

    [LoggerMessage(2, LogLevel.Debug, "The client went away before policy {Policy}'s request settled: settled at what it charged ({Tokens} tokens, {Money} money units)", EventName = "SettledOnAbort")]
    public static partial void SettledOnAbort(ILogger logger, string policy, long tokens, long money);

    [LoggerMessage(3, LogLevel.Information, "RateEngine tiers reloaded from configuration for {Count} policies; usage already counted is kept", EventName = "TiersReloaded")]
    public static partial void TiersReloaded(ILogger logger, int count);

    [LoggerMessage(4, LogLevel.Error, "RateEngine ignored a configuration reload: the tiers in force stay", EventName = "TiersReloadFailed")]
    public static partial void TiersReloadFailed(ILogger logger, Exception exception);

    [LoggerMessage(5, LogLevel.Warning, "Policy {Policy} could not settle an abandoned request at what it charged: it keeps its estimate", EventName = "SettleFailed")]
    public static partial void SettleFailed(ILogger logger, string policy, Exception exception);

    [LoggerMessage(6, LogLevel.Warning, "Policy {Policy}'s usage could not be read for the response headers: they go out without it", EventName = "UsageUnavailable")]
    public static partial void UsageUnavailable(ILogger logger, string policy, Exception exception);
}
