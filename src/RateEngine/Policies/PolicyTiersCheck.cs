namespace RateEngine.Policies;

/// <summary>Catches a tier that names a layer the policy does not have: a typo would otherwise leave that layer without a limit.</summary>
internal static class PolicyTiersCheck
{
    public static void ThrowIfUnknownLayers(PolicyTiers tiers, IEnumerable<string> layerNames)
    {
        var known = new HashSet<string>(layerNames, StringComparer.Ordinal);
        foreach ((string tier, IReadOnlyDictionary<string, long> limits) in tiers)
        {
            foreach (string layer in limits.Keys)
            {
                if (!known.Contains(layer))
                {
                    throw new InvalidOperationException($"Tier '{tier}' sets a limit for layer '{layer}', which the policy does not have.");
                }
            }
        }
    }
}
