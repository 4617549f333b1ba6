using System.Threading.RateLimiting;

namespace RateEngine.Limiters;

/// <summary>
/// The leases every RateEngine limiter hands out. Successful and most failed leases are cached instances; a failure
/// with a retry delay allocates one small object carrying <c>RETRY_AFTER</c> and <c>REASON_PHRASE</c>.
/// </summary>
internal sealed class RateEngineLease : RateLimitLease
{
    private static readonly string[] RetryAfterAndReason = [MetadataName.RetryAfter.Name, MetadataName.ReasonPhrase.Name];
    private static readonly string[] ReasonOnly = [MetadataName.ReasonPhrase.Name];

    public static readonly RateEngineLease Acquired = new(isAcquired: true, retryAfter: null, reason: null);

    public static readonly RateEngineLease Evicted = new(false, null, ReasonPhrases.Evicted);

    public static readonly RateEngineLease Disposed = new(false, null, ReasonPhrases.Disposed);

    private readonly TimeSpan? _retryAfter;
    private readonly string? _reason;

    private RateEngineLease(bool isAcquired, TimeSpan? retryAfter, string? reason)
    {
        IsAcquired = isAcquired;
        _retryAfter = retryAfter;
        _reason = reason;
    }

    public override bool IsAcquired { get; }

    /// <summary>Only the names this lease has a value for, as the in-box leases list them.</summary>
    public override IEnumerable<string> MetadataNames =>
        _reason is null ? [] : _retryAfter is null ? ReasonOnly : RetryAfterAndReason;

    public static RateEngineLease Rejected(TimeSpan retryAfter, string reason) => new(false, retryAfter, reason);

    /// <summary>A failed lease with a reason and no retry delay; callers cache what they hand out often.</summary>
    public static RateEngineLease Refused(string reason) => new(false, null, reason);

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
