namespace RateEngine.Policies;

/// <summary>
/// One key of a <see cref="KeyTable{TContext,TKey}"/>: the first member layer's cell itself (so a key of a layer with a
/// table of its own is one object), the other members' cells, and whether the key is still live.
/// </summary>
internal class KeyEntry
{
    /// <summary>Marks an entry that eviction removed: whoever holds it looks the key up again.</summary>
    public static readonly object Evicted = new();

    /// <summary>
    /// Stands in a hold for a key the table had no room for (a soft layer goes on untracked, a hard one refuses), so that
    /// the layers sharing the key do not look it up again.
    /// </summary>
    public static readonly KeyEntry Missing = new();

    /// <summary>On a key's entry: the owning table while the key is live, <see cref="Evicted"/> once removed. Unused on other cells.</summary>
    public object? Link;

    /// <summary>On a key's entry: the cells of the second and later member layers (null when the table has one member).</summary>
    public KeyEntry[]? Siblings;

    /// <summary>On a key's entry: member <paramref name="member"/>'s cell (the first member's is the entry itself).</summary>
    public KeyEntry Cell(int member) => member == 0 ? this : Siblings![member - 1];
}
