namespace RateEngine.Policies;

/// <summary>
/// One key of a <see cref="KeyTable{TContext,TKey}"/>: the first member layer's cell itself (so a key of a layer with a
/// table of its own is one object), the other members' cells, and whether the key is still live.
/// </summary>
internal class KeyEntry
{
    /// <summary>Marks an entry (or a sub-key's cell) that a sweep is about to remove, pending its re-check that it is still idle.</summary>
    public static readonly object Evicting = new();

    /// <summary>Marks an entry (or a sub-key's cell) that a sweep removed: whoever holds it looks the key up again.</summary>
    public static readonly object Gone = new();

    /// <summary>
    /// Stands in a hold for a key the table had no room for (a soft layer goes on untracked, a hard one refuses), so that
    /// the layers sharing the key do not look it up again.
    /// </summary>
    public static readonly KeyEntry Missing = new();

    /// <summary>As <see cref="Missing"/>, for a key the table refused because too many live keys share its hash.</summary>
    public static readonly KeyEntry Colliding = new();

    /// <summary>
    /// On a key's entry: the owning table while the key is live, <see cref="Evicting"/> while a sweep re-checks it, and
    /// <see cref="Gone"/> once removed (on a sub-key's cell: its map, then the same marks). Unused on other cells.
    /// </summary>
    public object? Link;

    /// <summary>On a key's entry: the cells of the second and later member layers (null when the table has one member).</summary>
    public KeyEntry[]? Siblings;

    /// <summary>
    /// After an admission on a cell: true when a sweep removed the entry (or the sub-key's cell) whose link this is, so the
    /// admission counts for nothing. A sweep in progress is awaited (it holds its lock for a few instructions), and no user
    /// code runs: the mark itself says how the sweep ended.
    /// </summary>
    public static bool IsGone(ref object? link)
    {
        SpinWait spin = default;
        object? seen;
        while (ReferenceEquals(seen = Volatile.Read(ref link), Evicting))
        {
            spin.SpinOnce();
        }

        return ReferenceEquals(seen, Gone);
    }

    /// <summary>On a key's entry: member <paramref name="member"/>'s cell (the first member's is the entry itself).</summary>
    public KeyEntry Cell(int member) => member == 0 ? this : Siblings![member - 1];
}
