using RateEngine.Benchmarks.Subjects.Partitions;

namespace RateEngine.Benchmarks.Compare;

/// <summary>The partition section's results; <see cref="KeyBytes"/> is each key object's size (0 for int keys).</summary>
internal sealed record PartitionResult(int Keys, IReadOnlyDictionary<PartitionKeyKind, double> KeyBytes, IReadOnlyList<PartitionRow> Rows);
