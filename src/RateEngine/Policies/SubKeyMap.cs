namespace RateEngine.Policies;

/// <summary>One key's sub-keys on one layer (see <see cref="SubKeys{TContext,TState}"/>); its lock serializes additions.</summary>
internal sealed class SubKeyMap<TSubKey, TState> : KeyEntry
{
    /// <summary>
    /// The sub-keys and their cells: the first <see cref="Count"/> slots are in use. Written under the map's lock (a new
    /// slot is filled, then counted; a full array is copied into a larger one, published, then counted), read without it.
    /// </summary>
    public Slot[] Slots = new Slot[4];

    /// <summary>Slots in use.</summary>
    public int Count;

    public readonly record struct Slot(TSubKey Key, LayerEntry<TState> Cell);
}
