namespace RateEngine.AspNetCore.Http;

/// <summary>A policy's tiers as built, with configuration's (tier, layer) limits laid over them.</summary>
internal static class TierOverrides
{
    public static PolicyTiers Apply(PolicyTiers built, RateEnginePolicyOptions? configured)
    {
        var tiers = new PolicyTiers();
        foreach ((string tier, IReadOnlyDictionary<string, long> limits) in built)
        {
            foreach ((string layer, long limit) in limits)
            {
                tiers[tier][layer] = limit;
            }
        }

        if (configured is not null)
        {
            foreach ((string tier, Dictionary<string, long> limits) in configured.Tiers)
            {
                foreach ((string layer, long limit) in limits)
                {
                    tiers[tier][layer] = limit;
                }
            }
        }

        return tiers;
    }

    /// <summary>The configured (tier, layer) limits in a canonical text, to tell whether a reload changed them.</summary>
    public static string Describe(RateEnginePolicyOptions? configured)
    {
        if (configured is null)
        {
            return string.Empty;
        }

        var text = new System.Text.StringBuilder();
        foreach ((string tier, Dictionary<string, long> limits) in configured.Tiers.OrderBy(pair => pair.Key, StringComparer.Ordinal))
        {
            foreach ((string layer, long limit) in limits.OrderBy(pair => pair.Key, StringComparer.Ordinal))
            {
                text.Append(tier).Append('\0').Append(layer).Append('\0').Append(limit.ToString(System.Globalization.CultureInfo.InvariantCulture)).Append('\n');
            }
        }

        return text.ToString();
    }
}
