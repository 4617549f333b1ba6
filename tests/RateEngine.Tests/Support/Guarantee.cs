namespace RateEngine.Tests.Support;

/// <summary>One admission as the limiter decided it: its stamp (limiter ticks) and permit count.</summary>
public readonly record struct Admitted(long Stamp, long Permits);

/// <summary>
/// Checks recorded admissions against the src/DESIGN.md guarantee of each limiter, offline. Returns a description of the
/// first violation, or null.
/// </summary>
public static class Guarantee
{
    public static string? FindViolation(LimiterSpec spec, IReadOnlyCollection<Admitted> admissions)
    {
        Admitted[] sorted = admissions.Where(a => a.Permits > 0).OrderBy(a => a.Stamp).ToArray();
        return spec.Kind switch
        {
            LimiterKind.Log or LimiterKind.Counter => SlidingWindow(sorted, spec.Limit, spec.WindowTicks),
            LimiterKind.Fixed => FixedWindows(sorted, spec.Limit, spec.WindowTicks),
            LimiterKind.Bucket => Bucket(sorted, spec.Limit, spec.TokensPerPeriod, spec.WindowTicks),
            _ => throw new ArgumentOutOfRangeException(nameof(spec)),
        };
    }

    /// <summary>For every x: the permits stamped in [x, x + W) are at most L. Windows starting at a stamp suffice.</summary>
    private static string? SlidingWindow(Admitted[] sorted, long limit, long window)
    {
        long sum = 0;
        int end = 0;
        for (int start = 0; start < sorted.Length; start++)
        {
            while (end < sorted.Length && sorted[end].Stamp < sorted[start].Stamp + window)
            {
                sum += sorted[end].Permits;
                end++;
            }

            if (sum > limit)
            {
                return $"{sum} permits in [{sorted[start].Stamp}, {sorted[start].Stamp + window}) exceed the limit {limit}";
            }

            sum -= sorted[start].Permits;
        }

        return null;
    }

    /// <summary>Per aligned window [kW, (k+1)W): at most L.</summary>
    private static string? FixedWindows(Admitted[] sorted, long limit, long window)
    {
        foreach (var group in sorted.GroupBy(a => a.Stamp / window))
        {
            long sum = group.Sum(a => (long)a.Permits);
            if (sum > limit)
            {
                return $"{sum} permits in window {group.Key} exceed the limit {limit}";
            }
        }

        return null;
    }

    /// <summary>
    /// For every interval [s_i, s_j]: permits &lt;= burst + rate * (s_j - s_i), i.e. in integers
    /// N * period &lt;= burst * period + (s_j - s_i) * tokensPerPeriod (+ less than one tick of rounding).
    /// With prefix sums C: C_j*P - s_j*R - (C_(i-1)*P - s_i*R) &lt;= B*P, so one pass with a running minimum suffices.
    /// </summary>
    private static string? Bucket(Admitted[] sorted, long burst, long tokensPerPeriod, long period)
    {
        Int128 prefix = 0;
        Int128 lowest = Int128.MaxValue;
        long lowestStamp = 0;
        Int128 allowed = ((Int128)burst * period) + (tokensPerPeriod - 1);
        foreach (Admitted admitted in sorted)
        {
            Int128 before = (prefix * period) - ((Int128)admitted.Stamp * tokensPerPeriod);
            if (before < lowest)
            {
                lowest = before;
                lowestStamp = admitted.Stamp;
            }

            prefix += admitted.Permits;
            Int128 after = (prefix * period) - ((Int128)admitted.Stamp * tokensPerPeriod);
            if (after - lowest > allowed)
            {
                return $"tokens in [{lowestStamp}, {admitted.Stamp}] exceed burst {burst} + rate {tokensPerPeriod}/{period}";
            }
        }

        return null;
    }
}
