using System.Threading.RateLimiting;

namespace RateEngine.Samples.AiGateway;

/// <summary>
/// Caps requests with an unknown API key per client address. They are refused before the gateway's policy decides (its
/// layers need the caller's account), so without this nothing would slow a client guessing keys.
/// </summary>
public sealed class UnknownKeyGuard : IDisposable
{
    /// <summary>Unknown keys a client address may present per minute before it is answered 429.</summary>
    public const int PerMinute = 10;

    private readonly PartitionedRateLimiter<string> _attempts;

    public UnknownKeyGuard(TimeProvider time) => _attempts = PartitionedLimiter.CreateFixedWindow<string, string>(
        address => address,
        _ => new FixedWindowRateLimiterOptions { PermitLimit = PerMinute, Window = TimeSpan.FromMinutes(1), QueueLimit = 0 },
        new PartitionedLimiterOptions { TimeProvider = time });

    /// <summary>The error for a request whose key is unknown: 401, or 429 once its address has presented too many.</summary>
    public BadHttpRequestException Refuse(HttpContext http)
    {
        using RateLimitLease attempt = _attempts.AttemptAcquire(GatewayRequests.ClientIp(http));
        return attempt.IsAcquired
            ? new BadHttpRequestException("Unknown or missing API key: send Authorization: Bearer <key>.", StatusCodes.Status401Unauthorized)
            : new BadHttpRequestException("Too many unknown API keys from this address: try again in a minute.", StatusCodes.Status429TooManyRequests);
    }

    public void Dispose() => _attempts.Dispose();
}
