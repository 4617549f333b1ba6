namespace RateEngine.Limiters;

/// <summary>
/// Where one algorithm state lives: a single limiter's own cell, or a partition key's entry (which derives from this),
/// so that one <see cref="AlgorithmHost{TAlgorithm,TState}"/> serves both.
/// </summary>
internal class StateCell<TState>
{
    public TState State = default!;
}
