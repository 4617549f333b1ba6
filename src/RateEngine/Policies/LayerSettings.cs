using RateEngine.Timing;

namespace RateEngine.Policies;

/// <summary>
/// What every layer of one policy shares: its clock and calendar origin, tiers, key bound, threshold listener, and the key
/// tables built so far (by key selector and comparer, so that layers of one selector share one table).
/// </summary>
internal sealed record LayerSettings<TContext>(
    LimiterClock Clock,
    DateTimeOffset OriginUtc,
    Func<TContext, string?>? TierSelector,
    PolicyTiers? Tiers,
    int MaxKeys,
    int MaxSubKeysPerKey,
    Action<ThresholdCrossing>? OnThreshold)
{
    public Dictionary<(Delegate Selector, object? Comparer), object> KeyTables { get; } = [];
}
