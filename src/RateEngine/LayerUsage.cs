namespace RateEngine;

/// <summary>
/// One layer's usage for one key, read without consuming anything: what an application checks to switch to a cheaper
/// model or a lower <c>max_tokens</c> before the layer refuses.
/// </summary>
/// <param name="Layer">The layer's name.</param>
/// <param name="Limit">The limit in force for the key (its tier's).</param>
/// <param name="Used">What is counted now; above <paramref name="Limit"/> after an overrun.</param>
/// <param name="ResetAfter">How long until everything counted now has come back (the end of the period or window); zero when nothing is counted.</param>
public readonly record struct LayerUsage(string Layer, long Limit, long Used, TimeSpan ResetAfter)
{
    /// <summary>What is left: the limit less what is used, never below zero.</summary>
    public long Remaining => Math.Max(0, Limit - Used);

    /// <summary>The used fraction of the limit (above 1 after an overrun).</summary>
    public double Fraction => (double)Used / Limit;
}
