using RateEngine.Benchmarks.Subjects.Partitions;

namespace RateEngine.Benchmarks.Compare;

/// <summary>One row of the partition table: a family and key type, both sides.</summary>
internal sealed record PartitionRow(PartitionFamily Family, PartitionKeyKind KeyKind, PartitionStats Inbox, PartitionStats Engine);
