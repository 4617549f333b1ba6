namespace RateEngine;

/// <summary>
/// A lease was collected without being disposed (a bug in the caller): its concurrency slots have been freed.
/// </summary>
/// <param name="Estimate">The lease's estimate (kept, as for any unreconciled lease).</param>
/// <param name="ReleasedLayers">The concurrency layers whose slot was freed.</param>
public readonly record struct AbandonedLease(RequestCost Estimate, IReadOnlyList<string> ReleasedLayers);
