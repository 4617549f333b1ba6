using System.Threading.RateLimiting;

namespace RateEngine.Redis;

/// <summary>
/// A Redis limiter's lease. Window and bucket permits are spent when admitted, so disposing gives nothing back; a refusal
/// carries <c>RETRY_AFTER</c> (when Redis said when) and <c>REASON_PHRASE</c>.
/// </summary>
internal sealed class RedisLease : RateLimitLease
{
    public static readonly RedisLease Acquired = new(true, null, null);

    private static readonly string[] RetryAndReason = [MetadataName.RetryAfter.Name, MetadataName.ReasonPhrase.Name];
    private static readonly string[] ReasonOnly = [MetadataName.ReasonPhrase.Name];

    private readonly TimeSpan? _retryAfter;
    private readonly string? _reason;

    public RedisLease(bool acquired, TimeSpan? retryAfter, string? reason)
    {
        IsAcquired = acquired;
        _retryAfter = retryAfter;
        _reason = reason;
    }

    public override bool IsAcquired { get; }

    public override IEnumerable<string> MetadataNames =>
        _retryAfter is not null ? RetryAndReason : _reason is not null ? ReasonOnly : [];

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        if (_retryAfter is { } retryAfter && metadataName == MetadataName.RetryAfter.Name)
        {
            metadata = retryAfter;
            return true;
        }

        if (_reason is not null && metadataName == MetadataName.ReasonPhrase.Name)
        {
            metadata = _reason;
            return true;
        }

        metadata = null;
        return false;
    }
}
