using System.Collections.Frozen;

namespace RateEngine;

/// <summary>
/// Turns (model, input tokens, output tokens) into micro-dollars with caller-supplied prices, for cost layers that count
/// <see cref="PolicyMeter.Money"/> in micro-dollars. Immutable and thread-safe.
/// </summary>
/// <remarks>
/// A dollar is 1,000,000 micro-dollars, so a price of $2.50 per million tokens is 2.5 micro-dollars a token. Costs are
/// computed exactly in <see cref="decimal"/> and rounded up to a whole micro-dollar: a budget is never charged less than
/// the provider will bill.
/// </remarks>
public sealed class PriceTable
{
    private readonly FrozenDictionary<string, ModelPrice> _prices;

    /// <param name="prices">One price per model.</param>
    /// <exception cref="ArgumentNullException">The prices or a model name are null.</exception>
    /// <exception cref="ArgumentException">A model is listed twice.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A price is negative.</exception>
    public PriceTable(IEnumerable<ModelPrice> prices)
    {
        ArgumentNullException.ThrowIfNull(prices);
        var byModel = new Dictionary<string, ModelPrice>(StringComparer.Ordinal);
        foreach (ModelPrice price in prices)
        {
            ArgumentNullException.ThrowIfNull(price, nameof(prices));
            ArgumentNullException.ThrowIfNull(price.Model, nameof(prices));
            ArgumentOutOfRangeException.ThrowIfNegative(price.InputPerMillion, nameof(prices));
            ArgumentOutOfRangeException.ThrowIfNegative(price.OutputPerMillion, nameof(prices));
            if (!byModel.TryAdd(price.Model, price))
            {
                throw new ArgumentException($"Model '{price.Model}' is listed twice.", nameof(prices));
            }
        }

        _prices = byModel.ToFrozenDictionary(StringComparer.Ordinal);
    }

    /// <summary>The models priced.</summary>
    public IEnumerable<string> Models => _prices.Keys;

    /// <summary>The cost of a request in micro-dollars, rounded up.</summary>
    /// <exception cref="ArgumentNullException">The model is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token count is negative.</exception>
    /// <exception cref="KeyNotFoundException">The model is not priced.</exception>
    /// <exception cref="OverflowException">The cost does not fit a <see cref="long"/>.</exception>
    public long MicroDollars(string model, long inputTokens, long outputTokens)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(inputTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(outputTokens);
        if (!_prices.TryGetValue(model, out ModelPrice? price))
        {
            throw new KeyNotFoundException($"No price is set for model '{model}'.");
        }

        // Dollars per million tokens are micro-dollars per token.
        decimal microDollars = (inputTokens * price.InputPerMillion) + (outputTokens * price.OutputPerMillion);
        return decimal.ToInt64(decimal.Ceiling(microDollars));
    }

    /// <summary>Whether <paramref name="model"/> is priced, and its price.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is null.</exception>
    public bool TryGetPrice(string model, out ModelPrice? price)
    {
        ArgumentNullException.ThrowIfNull(model);
        return _prices.TryGetValue(model, out price);
    }
}
