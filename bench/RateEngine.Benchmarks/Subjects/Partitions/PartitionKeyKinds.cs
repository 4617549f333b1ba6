namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>Every <see cref="PartitionKeyKind"/> and its name.</summary>
internal static class PartitionKeyKinds
{
    public static readonly PartitionKeyKind[] All = Enum.GetValues<PartitionKeyKind>();

    public static string Name(this PartitionKeyKind kind) => kind switch
    {
        PartitionKeyKind.Int => "int",
        PartitionKeyKind.IPv4 => "IPv4 string",
        _ => "IPv6 string",
    };
}
