namespace RateEngine.Policies;

/// <summary>
/// Catches a tier limit that would do nothing: one for a layer the policy does not have (a typo would leave that layer
/// without a limit), or for a layer whose rule sets its own limit (a tier's would be ignored).
/// </summary>
internal static class PolicyTiersCheck
{
    public static void ThrowIfUnknownLayers(PolicyTiers tiers, IEnumerable<(string Name, PolicyRule Rule)> layers)
    {
        Dictionary<string, PolicyRule> known = layers.ToDictionary(layer => layer.Name, layer => layer.Rule, StringComparer.Ordinal);
        foreach ((string tier, IReadOnlyDictionary<string, long> limits) in tiers)
        {
            foreach (string layer in limits.Keys)
            {
                if (!known.TryGetValue(layer, out PolicyRule? rule))
                {
                    throw new InvalidOperationException($"Tier '{tier}' sets a limit for layer '{layer}', which the policy does not have.");
                }

                if (rule.Limit is { } fixedLimit)
                {
                    throw new InvalidOperationException(
                        $"Tier '{tier}' sets a limit for layer '{layer}', whose rule sets its own ({fixedLimit}): tiers apply to layers built without a limit.");
                }
            }
        }
    }
}
