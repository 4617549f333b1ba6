using RateEngine.Limiters;

namespace RateEngine.Partitioning;

/// <summary>
/// The link of a hot key (see <see cref="PartitionedLimiterOptions.PerCoreReservation"/>): its permits are handed out from
/// per-core blocks over the key's own entry state, which stays the shared state every block is taken from.
/// </summary>
/// <remarks>
/// Promotion is a CAS of the entry's link from the tier to this: a thread that read the tier before it still admits on the
/// entry's state directly, which is what a block's refill does, so the blocks' invariant holds from the first one on.
/// </remarks>
internal sealed class PartitionHotKey(object tier, PerCoreHost host)
{
    /// <summary>The key's <see cref="PartitionTier{TAlgorithm,TState}"/>.</summary>
    public object Tier { get; } = tier;

    /// <summary>The key's blocks, over its entry's state.</summary>
    public PerCoreHost Host { get; } = host;
}
