namespace RateEngine.AspNetCore.Http;

/// <summary>The policies one endpoint's requests are decided by, as one policy, and their names joined with '+'.</summary>
internal sealed record Combination<TContext>(string Name, IRatePolicy<TContext> Policy)
{
    /// <summary>Whether an unreconciled request keeps its token estimate on some layer (else every token layer gives it back).</summary>
    public bool KeepsTokenEstimate { get; } = KeepsEstimate(Policy, PolicyMeter.Tokens);

    /// <summary>As <see cref="KeepsTokenEstimate"/>, for money.</summary>
    public bool KeepsMoneyEstimate { get; } = KeepsEstimate(Policy, PolicyMeter.Money);

    /// <summary>
    /// True if a layer of <paramref name="meter"/> keeps an unreconciled estimate, or none counts it; false when every one
    /// gives it back (<see cref="PolicyRule.RefundingUnreconciled"/>).
    /// </summary>
    private static bool KeepsEstimate(IRatePolicy<TContext> policy, PolicyMeter meter)
    {
        bool any = false;
        foreach (string layer in policy.LayerNames)
        {
            PolicyRule rule = policy.GetRule(layer);
            if (rule.Meter == meter)
            {
                if (!rule.RefundsUnreconciled)
                {
                    return true;
                }

                any = true;
            }
        }

        return !any;
    }
}
