namespace RateEngine.Partitioning;

/// <summary>
/// Makes a new key's entry for <see cref="PartitionTable{TKey,TEntry}.GetOrAdd"/>, under the key's shard lock and only once
/// the key is known to be missing. A struct passed by reference, so a maker can hand back what it learned (the clock
/// reading a new state was made at) without an allocation.
/// </summary>
internal interface IEntryFactory<in TKey, out TEntry>
{
    TEntry Create(TKey key);
}
