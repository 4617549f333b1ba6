namespace RateEngine;

/// <summary>
/// What a reconcile did on one weighted layer: raised for every layer a lease's estimate touched, for cost accounting.
/// </summary>
/// <param name="Layer">The layer's name.</param>
/// <param name="Key">The request's key on the layer (null for a layer without keys).</param>
/// <param name="Meter">The meter the layer counts.</param>
/// <param name="Estimate">The amount reserved at admission.</param>
/// <param name="Actual">The actual amount.</param>
/// <param name="Overrun">How much the actual exceeded the estimate (charged past the cap if need be); 0 when it did not.</param>
/// <param name="Refunded">How much of the estimate came back to the budget (less than the difference when its window had passed).</param>
public readonly record struct ReconcileRecord(string Layer, object? Key, PolicyMeter Meter, long Estimate, long Actual, long Overrun, long Refunded);
