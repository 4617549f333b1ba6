namespace RateEngine;

/// <summary>A soft layer's usage reached one of its thresholds: raised once per threshold, period and key.</summary>
/// <param name="Layer">The layer's name.</param>
/// <param name="Key">The key whose usage crossed (null for a layer without keys).</param>
/// <param name="Threshold">The threshold reached, as a fraction of the limit.</param>
/// <param name="Used">The usage observed at or above it.</param>
/// <param name="Limit">The limit in force.</param>
public readonly record struct ThresholdCrossing(string Layer, object? Key, double Threshold, long Used, long Limit);
