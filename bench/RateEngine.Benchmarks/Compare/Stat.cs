namespace RateEngine.Benchmarks.Compare;

/// <summary>Median, minimum and maximum over the rounds.</summary>
internal sealed record Stat(double Median, double Min, double Max)
{
    public static Stat Of(IEnumerable<double> values)
    {
        double[] sorted = [.. values.Order()];
        Check.That(sorted.Length > 0, "no samples");
        int middle = sorted.Length / 2;
        double median = sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
        return new Stat(median, sorted[0], sorted[^1]);
    }
}
