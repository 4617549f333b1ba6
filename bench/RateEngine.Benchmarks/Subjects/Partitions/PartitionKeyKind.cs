namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The key types: an int, and strings shaped like IPv4 and IPv6 addresses.</summary>
internal enum PartitionKeyKind
{
    Int,
    IPv4,
    IPv6,
}
