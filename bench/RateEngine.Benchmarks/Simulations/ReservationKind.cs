namespace RateEngine.Benchmarks.Simulations;

/// <summary>What a request reserves against its user's budget when it is admitted.</summary>
internal enum ReservationKind
{
    /// <summary>The request's <c>max_tokens</c>: never overruns, under-admits.</summary>
    MaxTokens,

    /// <summary><see cref="CostEstimator{TSelector}.Estimate"/> for the request's model.</summary>
    Learned,

    /// <summary>The actual output, known in advance: the ideal no real policy can reach.</summary>
    Exact,
}
