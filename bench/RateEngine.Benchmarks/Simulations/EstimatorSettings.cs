namespace RateEngine.Benchmarks.Simulations;

/// <summary>The synthetic workload of the estimator simulation. Everything is seeded: the same settings give the same table.</summary>
internal sealed record EstimatorSettings
{
    /// <summary>Users, each with a budget of its own and the same request stream statistics.</summary>
    public int Users { get; init; } = 8;

    /// <summary>Virtual minutes simulated.</summary>
    public int Minutes { get; init; } = 60;

    /// <summary>Each user's output tokens per minute: a fixed window of one minute.</summary>
    public long TokensPerMinute { get; init; } = 40_000;

    /// <summary>Every request's <c>max_tokens</c>; a response stops there.</summary>
    public long MaxTokens { get; init; } = 4096;

    /// <summary>Requests each user sends per minute on average (Poisson arrivals), whether or not they are admitted.</summary>
    public double RequestsPerUserPerMinute { get; init; } = 120;

    /// <summary>Median output tokens of a response (lognormal).</summary>
    public double MedianTokens { get; init; } = 300;

    /// <summary>95th percentile of output tokens (lognormal, before the cut at <see cref="MaxTokens"/>).</summary>
    public double P95Tokens { get; init; } = 1500;

    /// <summary>Time to the first token, seconds.</summary>
    public double FirstTokenSeconds { get; init; } = 0.5;

    /// <summary>Output speed while streaming, tokens per second: a response ends, and is reconciled, this long after admission.</summary>
    public double TokensPerSecond { get; init; } = 50;

    /// <summary>The estimator's options (defaults: 0.95 quantile of the last 256 actuals, after 20).</summary>
    public CostEstimatorOptions Estimator { get; init; } = new();

    public int Seed { get; init; } = 20_261_124;
}
