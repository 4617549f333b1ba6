namespace RateEngine.Policies;

/// <summary>
/// Catches a tier limit that would do nothing: one for a layer the policy does not have (a typo would leave that layer
/// without a limit), or for a layer whose rule sets its own limit (a tier's would be ignored).
/// </summary>
internal static class PolicyTiersCheck
{
    /// <summary>
    /// Throws for a tier limit that would do nothing: <see cref="ArgumentException"/> naming <paramref name="paramName"/> for
    /// tiers passed in (UpdateTiers), <see cref="InvalidOperationException"/> for a builder's (null).
    /// </summary>
    public static void ThrowIfUnknownLayers(PolicyTiers tiers, IEnumerable<(string Name, PolicyRule Rule)> layers, string? paramName = null)
    {
        foreach ((string tier, string layer, _, PolicyRule? rule) in Limits(tiers, layers))
        {
            string? problem = rule is null ? $"Tier '{tier}' sets a limit for layer '{layer}', which the policy does not have."
                : rule.Limit is { } fixedLimit ? $"Tier '{tier}' sets a limit for layer '{layer}', whose rule sets its own ({fixedLimit}): tiers apply to layers built without a limit."
                : null;
            if (problem is not null)
            {
                throw paramName is null ? new InvalidOperationException(problem) : new ArgumentException(problem, paramName);
            }
        }
    }

    /// <summary>Every tier limit, with the rule of the layer it names (null when the policy has no such layer).</summary>
    public static IEnumerable<(string Tier, string Layer, long Limit, PolicyRule? Rule)> Limits(PolicyTiers tiers, IEnumerable<(string Name, PolicyRule Rule)> layers)
    {
        Dictionary<string, PolicyRule> rules = layers.ToDictionary(layer => layer.Name, layer => layer.Rule, StringComparer.Ordinal);
        foreach ((string tier, IReadOnlyDictionary<string, long> limits) in tiers)
        {
            foreach ((string layer, long limit) in limits)
            {
                yield return (tier, layer, limit, rules.GetValueOrDefault(layer));
            }
        }
    }
}
