using RateEngine.Timing;

namespace RateEngine.Policies;

/// <summary>What every layer of one policy shares: its clock and calendar origin, tiers, key bound and threshold listener.</summary>
internal sealed record LayerSettings<TContext>(
    LimiterClock Clock,
    DateTimeOffset OriginUtc,
    Func<TContext, string?>? TierSelector,
    PolicyTiers? Tiers,
    int MaxKeys,
    Action<ThresholdCrossing>? OnThreshold);
