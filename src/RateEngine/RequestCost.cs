namespace RateEngine;

/// <summary>
/// What one request costs, or is estimated to cost, on the weighted meters of a <see cref="RatePolicy{TContext}"/>:
/// its tokens and its money (in one unit the application chooses for every layer, for example micro-dollars, so that a
/// $50,000 global cap fits). Layers that count <see cref="PolicyMeter.Requests"/> count 1 whatever the cost.
/// </summary>
/// <param name="Tokens">Tokens (prompt plus output, or whatever the token layers count). Not negative.</param>
/// <param name="Money">Money in the policy's unit. Not negative.</param>
public readonly record struct RequestCost(long Tokens, long Money)
{
    /// <summary>A request that costs nothing on the weighted meters (it still counts on request layers).</summary>
    public static RequestCost None => default;

    /// <summary>The amount this cost puts on <paramref name="meter"/>.</summary>
    public long On(PolicyMeter meter) => meter switch
    {
        PolicyMeter.Tokens => Tokens,
        PolicyMeter.Money => Money,
        _ => 1,
    };

    /// <summary>How far this actual cost went past <paramref name="estimate"/>, per meter (zero where it did not): a reconcile's overrun.</summary>
    internal RequestCost PastEstimate(RequestCost estimate) => new(Math.Max(0, Tokens - estimate.Tokens), Math.Max(0, Money - estimate.Money));

    internal void ThrowIfNegative(string parameterName)
    {
        if (Tokens < 0 || Money < 0)
        {
            throw new ArgumentOutOfRangeException(parameterName, this, "A cost's tokens and money must not be negative.");
        }
    }
}
