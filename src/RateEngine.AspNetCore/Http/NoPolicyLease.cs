using System.Threading.RateLimiting;

namespace RateEngine.AspNetCore.Http;

/// <summary>The lease of a request no RateEngine policy applies to: admitted, holding nothing.</summary>
internal sealed class NoPolicyLease : RateLimitLease
{
    public static readonly NoPolicyLease Instance = new();

    public override bool IsAcquired => true;

    public override IEnumerable<string> MetadataNames => [];

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = null;
        return false;
    }
}
