using System.Text;
using RateEngine.Benchmarks.Compare;
using static RateEngine.Benchmarks.Compare.Cells;

namespace RateEngine.Benchmarks.Simulations;

/// <summary>The estimator simulation's table, its explanation, and estimator.md.</summary>
internal static class EstimatorReport
{
    public static string Table(EstimatorResult result)
    {
        EstimatorRow ideal = result.Row(ReservationKind.Exact);
        double minutes = result.UserMinutes;
        return MarkdownTable.Render(
            ["reservation", "admitted req/min per user", "of ideal", "output tok/min per user", "of budget", "overruns (of admitted)", "mean overrun (tok)", "largest overrun (tok)", "worst minute (of budget)"],
            [false, true, true, true, true, true, true, true, true],
            result.Rows.Select(r => new[]
            {
                Name(r.Kind, result.Settings),
                (r.Admitted / minutes).ToString("F1", Invariant),
                Percent((double)r.Admitted / ideal.Admitted),
                (r.ActualTokens / minutes).ToString("N0", Invariant),
                Percent(r.ActualTokens / minutes / result.Settings.TokensPerMinute),
                r.Overruns == 0 ? "0" : $"{r.Overruns:N0} ({(double)r.Overruns / r.Admitted * 100:F1} %)".ToString(Invariant),
                r.Overruns == 0 ? "0" : ((double)r.OverrunTokens / r.Overruns).ToString("F0", Invariant),
                r.LargestOverrun.ToString("N0", Invariant),
                Percent(r.WorstWindowOfBudget),
            }).ToList());
    }

    /// <summary>The section that compare.md and estimator.md share: what was simulated, the table, how to read it.</summary>
    public static void AppendSection(StringBuilder text, EstimatorResult result, string heading)
    {
        EstimatorSettings s = result.Settings;
        EstimatorRow max = result.Row(ReservationKind.MaxTokens);
        EstimatorRow learned = result.Row(ReservationKind.Learned);
        EstimatorRow ideal = result.Row(ReservationKind.Exact);
        text.AppendLine(heading);
        text.AppendLine();
        text.AppendLine(Invariant, $"Simulated, not measured: {s.Users} users × {s.Minutes} virtual minutes, each user sending {s.RequestsPerUserPerMinute:F0} requests per minute on average (Poisson, {result.Requests:N0} in all) against a budget of {s.TokensPerMinute:N0} output tokens per minute (a fixed one-minute window with reserve-then-reconcile). Every request has max_tokens {s.MaxTokens:N0}; its actual output is lognormal with median {s.MedianTokens:N0} and 95th percentile {s.P95Tokens:N0}, cut at max_tokens; it streams at {s.TokensPerSecond:F0} tokens/s after {s.FirstTokenSeconds:F1} s and is reconciled when it ends. The same seeded stream (seed {s.Seed}) is replayed for each reservation; refused requests are dropped, not retried. The learned estimate is one `CostEstimator<string>` for the model, shared by all users: the {s.Estimator.Quantile:0.###} quantile of the last {s.Estimator.SampleCount} actuals, max_tokens for the first {s.Estimator.MinimumSamples}; at the end it reserved {result.LearnedEstimateAtEnd:N0} tokens. The simulation took {result.Duration.TotalMilliseconds:F0} ms.");
        text.AppendLine();
        text.AppendLine(Table(result));
        text.AppendLine();
        text.AppendLine(Invariant, $"The learned estimate admits {(double)learned.Admitted / max.Admitted:F2}× the requests that reserving max_tokens does, {(double)learned.Admitted / ideal.Admitted * 100:F0} % of the ideal against {(double)max.Admitted / ideal.Admitted * 100:F0} %.");
        text.AppendLine();
        text.AppendLine("How to read it:");
        text.AppendLine();
        text.AppendLine("- **admitted req/min per user**: admitted requests over users × minutes. **of ideal**: over the row that reserves each request's exact");
        text.AppendLine("  actual output, which no real policy knows in advance. The gap of the max_tokens row is the under-admission the estimator is for.");
        text.AppendLine("- **output tok/min per user**, **of budget**: actual output tokens of the admitted requests, per user-minute, and over the budget.");
        text.AppendLine("- **overruns**: admitted requests whose actual output exceeded what they reserved; mean and largest excess in tokens. A budget");
        text.AppendLine("  charges an overrun when the response ends, so later requests pay for it; max_tokens and the ideal never overrun.");
        text.AppendLine("- **worst minute**: the largest actual output of the requests one user had admitted in one window, over the budget. Above");
        text.AppendLine("  100 % means reservations let through more than the budget in that minute (overruns charged to the next one).");
        text.AppendLine();
    }

    /// <summary>Writes estimator.md to <paramref name="outputDirectory"/>.</summary>
    public static string Write(EstimatorResult result, string outputDirectory, string commandLine)
    {
        Directory.CreateDirectory(outputDirectory);
        string path = Path.Combine(outputDirectory, "estimator.md");
        var text = new StringBuilder();
        text.AppendLine("# Learned reservations against max_tokens");
        text.AppendLine();
        text.AppendLine($"Written by `{commandLine}`. The simulation is deterministic: the same code and settings give the same table on any machine.");
        text.AppendLine();
        AppendSection(text, result, "## Admissions under a tokens-per-minute budget");
        File.WriteAllText(path, text.ToString());
        return path;
    }

    private static string Name(ReservationKind kind, EstimatorSettings s) => kind switch
    {
        ReservationKind.MaxTokens => string.Create(Invariant, $"(a) max_tokens ({s.MaxTokens:N0})"),
        ReservationKind.Learned => string.Create(Invariant, $"(b) learned p{s.Estimator.Quantile * 100:0.#} of last {s.Estimator.SampleCount}"),
        ReservationKind.Exact => "(c) exact actual (ideal)",
        _ => kind.ToString(),
    };
}
