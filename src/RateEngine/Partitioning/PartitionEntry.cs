using RateEngine.Limiters;

namespace RateEngine.Partitioning;

/// <summary>
/// One key's state: the algorithm state itself (a single <c>long</c> for the fixed window and the token bucket) and
/// one link that says what else the key has. 32 bytes for the one-word algorithms.
/// </summary>
internal sealed class PartitionEntry<TState> : StateCell<TState>
{
    /// <summary>Marks an entry that eviction removed: whoever holds it looks the key up again.</summary>
    public static readonly object Evicted = new();

    /// <summary>
    /// The key's <see cref="PartitionTier{TAlgorithm,TState}"/>; or, once it is hot, its <see cref="PartitionHotKey"/>; or,
    /// once the key has had to queue, its <see cref="PartitionKeyLimiter"/>; or <see cref="Evicted"/>.
    /// </summary>
    public object Link = null!;
}
