namespace RateEngine;

/// <summary>
/// A lease was collected without being disposed (a bug in the caller): its concurrency slots have been freed.
/// </summary>
/// <param name="Estimate">
/// The lease's estimate: never reconciled and never disposed, the lease's budgets keep all of it, on every layer (a layer
/// built with <see cref="PolicyRule.RefundingUnreconciled"/> gives an estimate back only on dispose). A lease reconciled
/// and then abandoned was settled at its actual then; only its slots were still held.
/// </param>
/// <param name="ReleasedLayers">The concurrency layers whose slot was freed.</param>
public readonly record struct AbandonedLease(RequestCost Estimate, IReadOnlyList<string> ReleasedLayers);
