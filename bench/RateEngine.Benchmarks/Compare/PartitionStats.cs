namespace RateEngine.Benchmarks.Compare;

/// <summary>One side's figures over the rounds.</summary>
internal sealed record PartitionStats(
    Stat ResidentBytesPerKey,
    Stat FirstTouchKeysPerSecond,
    double FirstTouchAllocatedBytesPerKey,
    Stat HotOpsPerSecond,
    double HotAllocatedBytesPerOperation);
