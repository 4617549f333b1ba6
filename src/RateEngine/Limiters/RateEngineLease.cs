using System.Threading.RateLimiting;

namespace RateEngine;

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

    /// <summary>Internal signal from a retired partition key's limiter: look the key up again. Never reaches a caller.</summary>
    public static readonly RateEngineLease Retired = new(false, null, ReasonPhrases.Disposed);

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

/// <summary>The <c>REASON_PHRASE</c> of each kind of failed lease.</summary>
internal static class ReasonPhrases
{
    public const string LimitReached = "Rate limit reached: not enough permits are free in the current window.";
    public const string QueuedAhead = "Requests are queued ahead of this one (QueueProcessingOrder.OldestFirst).";
    public const string QueueFull = "Rate limit reached and the queue is full (QueueLimit).";
    public const string Evicted = "Evicted from the queue by a newer request (QueueProcessingOrder.NewestFirst).";
    public const string Disposed = "The rate limiter was disposed while the request was queued.";
    public const string PartitionsFull =
        "Too many partition keys are active (MaxPartitions); new keys are refused until idle ones are evicted.";
    public const string TooManyCollisions =
        "Too many active partition keys share this key's hash code; new ones are refused until idle ones are evicted. " +
        "The key comparer's GetHashCode is degenerate, or the keys were chosen to collide.";
}
