using System.Threading.RateLimiting;

namespace RateEngine.Samples.AiGateway;

/// <summary>
/// Caps requests with an unknown API key per client address. They are refused before the gateway's policy decides (its
/// layers need the caller's account), so without this nothing would slow a client guessing keys. Admin calls have a
/// budget of their own: one right guess pauses the service, and API-key guesses from others behind the same address (a
/// NAT, a shared egress) must not lock the operator out.
/// </summary>
public sealed class UnknownKeyGuard : IDisposable
{
    /// <summary>Unknown keys a client address may present per minute before it is answered 429 (admin calls: as many, apart).</summary>
    public const int PerMinute = 10;

    private readonly PartitionedRateLimiter<string> _attempts;
    private readonly PartitionedRateLimiter<string> _adminAttempts;

    public UnknownKeyGuard(TimeProvider time)
    {
        _attempts = PerAddress(time);
        _adminAttempts = PerAddress(time);
    }

    /// <summary>The error for a request whose key is unknown: 401, or 429 once its address has presented too many.</summary>
    public BadHttpRequestException Refuse(HttpContext http) => Count(
        _attempts, http, "Unknown or missing API key: send Authorization: Bearer <key>.", "Too many unknown API keys from this address: try again in a minute.");

    /// <summary>An admin call, counted whatever its key: 401 for a wrong key, 429 once its address has made too many.</summary>
    public BadHttpRequestException AdminAttempt(HttpContext http) => Count(
        _adminAttempts, http, "Unknown or missing admin key: send X-Admin-Key.", "Too many admin calls from this address: try again in a minute.");

    public void Dispose()
    {
        _attempts.Dispose();
        _adminAttempts.Dispose();
    }

    private static BadHttpRequestException Count(PartitionedRateLimiter<string> attempts, HttpContext http, string unknown, string tooMany)
    {
        using RateLimitLease attempt = attempts.AttemptAcquire(GatewayRequests.ClientIp(http));
        return attempt.IsAcquired
            ? new BadHttpRequestException(unknown, StatusCodes.Status401Unauthorized)
            : new RetryLaterException(tooMany, attempt.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan wait) ? wait : null);
    }

    private static PartitionedRateLimiter<string> PerAddress(TimeProvider time) => PartitionedLimiter.CreateFixedWindow<string, string>(
        address => address,
        _ => new FixedWindowRateLimiterOptions { PermitLimit = PerMinute, Window = TimeSpan.FromMinutes(1), QueueLimit = 0 },
        new PartitionedLimiterOptions { TimeProvider = time });
}
