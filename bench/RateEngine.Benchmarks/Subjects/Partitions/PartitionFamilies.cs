namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>Every <see cref="PartitionFamily"/> and the names it goes by, so that adding a family touches one file.</summary>
internal static class PartitionFamilies
{
    public static readonly PartitionFamily[] All = Enum.GetValues<PartitionFamily>();

    /// <summary>For progress lines.</summary>
    public static string Name(this PartitionFamily family) => family switch
    {
        PartitionFamily.FixedWindow => "fixed window",
        PartitionFamily.TokenBucket => "token bucket",
        _ => "sliding window",
    };

    /// <summary>For report tables: says that RateEngine's side of the sliding window is the counter.</summary>
    public static string TableName(this PartitionFamily family) => family switch
    {
        PartitionFamily.FixedWindow => "fixed window",
        PartitionFamily.TokenBucket => "token bucket",
        _ => "sliding window (counter)",
    };

    /// <summary>For the chart's axis labels.</summary>
    public static string ChartName(this PartitionFamily family) => family switch
    {
        PartitionFamily.FixedWindow => "fixed",
        PartitionFamily.TokenBucket => "bucket",
        _ => "sliding/counter",
    };
}
