using RateEngine.Algorithms;

namespace RateEngine.Policies;

/// <summary>
/// What one request holds in one layer: found in the lookup phase, filled by the admission, and kept by the lease for
/// reconcile, step charges and release.
/// </summary>
internal struct LayerHold
{
    /// <summary>
    /// The key's entry in the layer's key table (<see cref="KeyEntry.Missing"/> when the table had no room,
    /// <see cref="KeyEntry.Colliding"/> when too many live keys share its hash), copied from
    /// the earlier layer that shares the table; null for a layer without keys, or until looked up.
    /// </summary>
    public KeyEntry? Key;

    /// <summary>The layer's cell of the key's entry (a <see cref="LayerEntry{TState}"/>); null until looked up.</summary>
    public object? Entry;

    /// <summary>The tier the request was decided in (a <see cref="LayerTier{TAlgorithm}"/>).</summary>
    public object? Tier;

    /// <summary>The admission, valid when <see cref="Reserved"/> is positive.</summary>
    public Admission Admission;

    /// <summary>The amount reserved on this layer (the estimate, or 1 for a request layer); 0 when nothing is held.</summary>
    public long Reserved;

    /// <summary>Overrun charged on this layer beyond <see cref="Reserved"/> so far.</summary>
    public long Overrun;
}
