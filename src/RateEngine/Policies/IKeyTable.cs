namespace RateEngine.Policies;

/// <summary>What the policy's idle sweep sees of a key table.</summary>
internal interface IKeyTable
{
    /// <summary>Shards of the table, swept one at a time.</summary>
    int ShardCount { get; }

    /// <summary>Evicts the keys of one shard whose every cell is idle.</summary>
    void Sweep(int shard);

    /// <summary>Runs between an eviction's first idle check and its mark (tests: a request racing the sweep). Null in production.</summary>
    Action? BeforeEvictionMark { get; set; }
}
