namespace RateEngine.AspNetCore;

/// <summary>One registered policy's configuration (<see cref="RateEngineOptions.Policies"/>).</summary>
public sealed class RateEnginePolicyOptions
{
    /// <summary>Tier → layer → limit, overriding the policy's own tiers for the pairs named. Default: none.</summary>
    public Dictionary<string, Dictionary<string, long>> Tiers { get; } = new(StringComparer.Ordinal);
}
