using System.Threading.RateLimiting;

namespace RateEngine.Policies;

/// <summary>A refusal: names the layer, says why, and carries the retry delay. Holds nothing, so it cannot be reconciled.</summary>
internal sealed class RefusedPolicyLease(string layer, string reason, TimeSpan? retryAfter, bool serviceWide, bool permanent = false) : PolicyLease
{
    /// <summary>The blocking layer of the operator's pause: a name no layer may take, so the pause is never mistaken for one.</summary>
    internal const string PauseLayer = "pause";

    private static readonly string[] WithRetryAfter = [MetadataName.RetryAfter.Name, MetadataName.ReasonPhrase.Name, BlockingLayerName.Name];
    private static readonly string[] WithoutRetryAfter = [MetadataName.ReasonPhrase.Name, BlockingLayerName.Name];

    public override bool IsAcquired => false;

    public override string? BlockingLayer => layer;

    public override string? Reason => reason;

    public override TimeSpan? RetryAfter => retryAfter;

    /// <summary>The refusing layers' longest known delay where a full concurrency layer hides it (<see cref="PolicyLease.MinimumRetryAfter"/>); read only when <see cref="RetryAfter"/> is null.</summary>
    public TimeSpan? AtLeast { get; init; }

    public override TimeSpan? MinimumRetryAfter => retryAfter ?? AtLeast;

    public override bool IsServiceWide => serviceWide;

    public override bool IsPermanentRefusal => permanent;

    public override RequestCost Estimate => default;

    public override RequestCost Consumed => default;

    public override bool IsSettled => false;

    public override IEnumerable<string> MetadataNames => retryAfter is null ? WithoutRetryAfter : WithRetryAfter;

    public override void Charge(RequestCost step) => throw NotAcquired();

    public override RequestCost Reconcile(RequestCost actual) => throw NotAcquired();

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = metadataName == MetadataName.ReasonPhrase.Name ? reason
            : metadataName == BlockingLayerName.Name ? layer
            : metadataName == MetadataName.RetryAfter.Name && retryAfter is { } after ? after
            : null;
        return metadata is not null;
    }

    private static InvalidOperationException NotAcquired() =>
        new("The request was refused, so its lease holds nothing to charge or reconcile.");
}
