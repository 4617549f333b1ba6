namespace RateEngine.Limiters;

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

    /// <summary>A policy layer's refusal of a request whose tier has no limit on it (for good, until the tiers change).</summary>
    public static string NoLimit(string layer) => $"No limit is set for this request's tier on layer '{layer}'.";

    /// <summary>A policy layer's refusal of a request whose cost is above its cap (for good, until the cap changes).</summary>
    public static string AboveCap(string layer, long amount, long limit) =>
        $"The request's cost ({amount}) is above the cap of layer '{layer}' ({limit}): it could never be admitted.";
}
