namespace RateEngine.Benchmarks.Simulations;

/// <summary>One reservation policy's outcome over the whole simulated run.</summary>
internal sealed record EstimatorRow(
    ReservationKind Kind,
    long Admitted,
    long Refused,
    long ActualTokens,
    long Overruns,
    long OverrunTokens,
    long LargestOverrun,
    double WorstWindowOfBudget);
