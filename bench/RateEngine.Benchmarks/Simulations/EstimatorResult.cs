namespace RateEngine.Benchmarks.Simulations;

/// <summary>The simulation's rows (max_tokens, learned, exact), its settings and how long it took on the wall clock.</summary>
internal sealed record EstimatorResult(EstimatorSettings Settings, IReadOnlyList<EstimatorRow> Rows, long Requests, long LearnedEstimateAtEnd, TimeSpan Duration)
{
    public EstimatorRow Row(ReservationKind kind) => Rows.Single(r => r.Kind == kind);

    public double UserMinutes => (double)Settings.Users * Settings.Minutes;
}
