namespace RateEngine.Policies;

/// <summary>One key's sub-keys on one layer (see <see cref="SubKeys{TContext,TState}"/>); its lock serializes changes.</summary>
internal sealed class SubKeyMap<TSubKey, TState> : KeyEntry
{
    /// <summary>
    /// The sub-keys and their cells: an immutable array, replaced whole under the map's lock (a new sub-key, idle ones
    /// dropped), so a reader without the lock always sees one consistent set.
    /// </summary>
    public Slot[] Slots = [];

    public readonly record struct Slot(TSubKey Key, LayerEntry<TState> Cell);
}
