using System.Collections;

namespace RateEngine;

/// <summary>
/// The limits of each tier: tier name → layer name → limit. A layer whose rule has no fixed limit takes its limit here,
/// from the tier its tier selector names for the request. Replace the whole set at run time with
/// <see cref="RatePolicy{TContext}.UpdateTiers"/>: usage already counted is kept.
/// </summary>
/// <example>
/// <code>
/// var tiers = new PolicyTiers
/// {
///     ["free"] = { ["user cost/day"] = 100_000, ["user tokens/min"] = 20_000 },
///     ["pro"] = { ["user cost/day"] = 2_000_000, ["user tokens/min"] = 200_000 },
/// };
/// </code>
/// </example>
public sealed class PolicyTiers : IEnumerable<KeyValuePair<string, IReadOnlyDictionary<string, long>>>
{
    private readonly Dictionary<string, Limits> _tiers = new(StringComparer.Ordinal);

    /// <summary>The limits of tier <paramref name="tier"/>, created empty on first use (which makes nested initializers work).</summary>
    /// <exception cref="ArgumentException">The name is null or blank.</exception>
    public Limits this[string tier]
    {
        get
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(tier);
            if (!_tiers.TryGetValue(tier, out Limits? limits))
            {
                _tiers[tier] = limits = new Limits();
            }

            return limits;
        }
    }

    /// <summary>The tier names.</summary>
    public IEnumerable<string> Names => _tiers.Keys;

    /// <summary>The limit of <paramref name="layer"/> in <paramref name="tier"/>, if the tier sets one.</summary>
    public bool TryGetLimit(string tier, string layer, out long limit)
    {
        limit = 0;
        return _tiers.TryGetValue(tier, out Limits? limits) && limits.TryGetValue(layer, out limit);
    }

    /// <summary>A deep copy: what a policy keeps, so that the caller changing its object later changes nothing there.</summary>
    internal PolicyTiers Copy()
    {
        var copy = new PolicyTiers();
        foreach ((string tier, Limits limits) in _tiers)
        {
            Limits copied = copy[tier];
            foreach ((string layer, long limit) in limits)
            {
                copied[layer] = limit;
            }
        }

        return copy;
    }

    /// <inheritdoc />
    public IEnumerator<KeyValuePair<string, IReadOnlyDictionary<string, long>>> GetEnumerator() =>
        _tiers.Select(pair => new KeyValuePair<string, IReadOnlyDictionary<string, long>>(pair.Key, pair.Value)).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>One tier's limits: layer name → limit.</summary>
    public sealed class Limits : IReadOnlyDictionary<string, long>
    {
        private readonly Dictionary<string, long> _limits = new(StringComparer.Ordinal);

        /// <summary>The limit of <paramref name="layer"/> in this tier. Must be at least 1.</summary>
        /// <exception cref="ArgumentOutOfRangeException">The limit is below 1 or above <see cref="long.MaxValue"/> / 2.</exception>
        /// <exception cref="KeyNotFoundException">Read for a layer the tier does not set.</exception>
        public long this[string layer]
        {
            get => _limits[layer];
            set
            {
                ArgumentException.ThrowIfNullOrWhiteSpace(layer);
                if (value is < 1 or > long.MaxValue / 2)
                {
                    throw new ArgumentOutOfRangeException(nameof(value), value, $"The limit of layer '{layer}' must be between 1 and {long.MaxValue / 2}.");
                }

                _limits[layer] = value;
            }
        }

        /// <inheritdoc />
        public IEnumerable<string> Keys => _limits.Keys;

        /// <inheritdoc />
        public IEnumerable<long> Values => _limits.Values;

        /// <inheritdoc />
        public int Count => _limits.Count;

        /// <inheritdoc />
        public bool ContainsKey(string key) => _limits.ContainsKey(key);

        /// <inheritdoc />
        public bool TryGetValue(string key, out long value) => _limits.TryGetValue(key, out value);

        /// <inheritdoc />
        public IEnumerator<KeyValuePair<string, long>> GetEnumerator() => _limits.GetEnumerator();

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
