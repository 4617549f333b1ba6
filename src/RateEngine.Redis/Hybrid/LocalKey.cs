namespace RateEngine.Redis.Hybrid;

/// <summary>One key's local state on one node: its current block, the reservation in flight, and the next block's size.</summary>
internal sealed class LocalKey(string partitionKey)
{
    public string PartitionKey { get; } = partitionKey;

    public LocalBlock Block = LocalBlock.Empty;

    /// <summary>The reservation in flight, at most one per key (guarded by the key's lock when started or cleared).</summary>
    public Task<LocalBlock>? Refill;

    /// <summary>Permits the next reservation asks for: twice what the last block served, within [1, MaxBlock].</summary>
    public long NextSize = 1;

    public long LastUsed;
}
