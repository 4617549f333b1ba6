using System.Threading.RateLimiting;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// The synchronous acquire's answer while the request's context is still being read: not acquired, so the in-box middleware
/// goes on to the asynchronous acquire, which decides. It never reaches a rejection handler.
/// </summary>
internal sealed class PendingLease : RateLimitLease
{
    public static readonly PendingLease Instance = new();

    public override bool IsAcquired => false;

    public override IEnumerable<string> MetadataNames => [];

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = null;
        return false;
    }
}
