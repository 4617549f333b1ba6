namespace RateEngine.Budgets;

/// <summary>Constructor-time checks of <see cref="CostEstimatorOptions"/>: <see cref="ArgumentOutOfRangeException"/> naming the option.</summary>
internal static class EstimatorValidation
{
    public static void Validate(CostEstimatorOptions options)
    {
        if (!(options.Quantile > 0 && options.Quantile <= 1))
        {
            throw OutOfRange(nameof(options.Quantile), options.Quantile, "must be greater than 0 and at most 1.");
        }

        if (options.SampleCount < 1 || options.SampleCount > CostEstimatorOptions.MaxSampleCount)
        {
            throw OutOfRange(nameof(options.SampleCount), options.SampleCount, $"must be greater than 0 and at most {CostEstimatorOptions.MaxSampleCount}.");
        }

        if (options.MinimumSamples < 1 || options.MinimumSamples > options.SampleCount)
        {
            throw OutOfRange(nameof(options.MinimumSamples), options.MinimumSamples, "must be greater than 0 and at most SampleCount.");
        }

        if (!(options.Headroom >= 1 && options.Headroom <= 1000))
        {
            throw OutOfRange(nameof(options.Headroom), options.Headroom, "must be at least 1 and at most 1000.");
        }

        if (options.MaxSelectors < 1)
        {
            throw OutOfRange(nameof(options.MaxSelectors), options.MaxSelectors, "must be greater than 0.");
        }
    }

    private static ArgumentOutOfRangeException OutOfRange(string option, object value, string requirement) =>
        new("options", value, $"{option} {requirement}");
}
