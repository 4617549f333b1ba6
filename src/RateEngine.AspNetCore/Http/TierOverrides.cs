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
}
