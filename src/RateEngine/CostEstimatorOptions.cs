namespace RateEngine;

/// <summary>
/// Options for <see cref="CostEstimator{TSelector}"/>. They are validated and copied when the estimator is created, so
/// changing them afterwards changes nothing.
/// </summary>
public sealed class CostEstimatorOptions
{
    /// <summary>The largest <see cref="SampleCount"/> accepted (65,536): each selector keeps two arrays of this many longs.</summary>
    public const int MaxSampleCount = 1 << 16;

    /// <summary>
    /// The quantile of the recent actuals that an estimate reserves: with 0.95, about 1 request in 20 uses more than its
    /// reservation. Must be greater than 0 and at most 1 (1 is the largest recent actual). Default 0.95.
    /// </summary>
    public double Quantile { get; set; } = 0.95;

    /// <summary>
    /// How many of a selector's most recent actuals the quantile is taken over: the estimator follows a change in a
    /// selector's costs within this many observations. Memory is 16 bytes per sample per selector. Must be greater than
    /// 0 and at most <see cref="MaxSampleCount"/>. Default 256.
    /// </summary>
    public int SampleCount { get; set; } = 256;

    /// <summary>
    /// How many actuals a selector must have been observed with before its estimate is used; until then
    /// <see cref="CostEstimator{TSelector}.Estimate"/> returns the maximum. Must be greater than 0 and at most
    /// <see cref="SampleCount"/>. Default 20.
    /// </summary>
    public int MinimumSamples { get; set; } = 20;

    /// <summary>
    /// A factor the quantile is multiplied by (then rounded up) before it is bounded by the maximum: 1.2 reserves 20 %
    /// more than the quantile, to overrun less often. Must be at least 1 and at most 1,000. Default 1 (the quantile itself).
    /// </summary>
    public double Headroom { get; set; } = 1.0;

    /// <summary>
    /// The most selectors the estimator keeps state for, so that a caller choosing selectors cannot grow its memory
    /// without limit. Once it is full, a new selector's observations are ignored and its estimate is the maximum (the
    /// cautious answer). Selectors are never evicted. Must be greater than 0. Default 1,024.
    /// </summary>
    public int MaxSelectors { get; set; } = 1024;
}
