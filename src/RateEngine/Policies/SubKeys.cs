namespace RateEngine.Policies;

/// <summary>
/// A layer's second key under its first (the tool under the user): per key, a small map from sub-key to the layer's cell,
/// kept as the layer's cell of the key's entry. The layer needs no table of its own, and a request's lookup lands on the
/// cache lines the key's other layers have just read.
/// </summary>
/// <remarks>
/// <para>A map holds at most a fixed number of sub-keys. When it is full, its idle sub-keys are dropped with the key
/// table's protocol (mark the cell's link <see cref="KeyEntry.Evicting"/>, re-check that it is idle, then mark it
/// <see cref="KeyEntry.Gone"/>; a layer that admitted on a cell re-reads its link after its CAS,
/// <see cref="KeyEntry.IsGone"/>), and a sub-key that still finds no room is refused by a hard layer and goes untracked
/// on a soft one.</para>
/// <para>The key's entry is idle only when every sub-key's cell is, so evicting the key drops its sub-keys with it.</para>
/// </remarks>
internal abstract class SubKeys<TContext, TState>
{
    /// <summary>Why a hard layer refuses a sub-key that finds its key's map full.</summary>
    public abstract string FullReason(string layer);

    /// <summary>A fresh, empty map: the layer's cell of a new key's entry.</summary>
    public abstract KeyEntry CreateMap();

    /// <summary>The request's sub-key's cell in <paramref name="map"/>, created if new; null when the map is full.</summary>
    public abstract LayerEntry<TState>? FindOrCreate(KeyEntry map, TContext context, string layer);

    /// <summary>The request's sub-key's live cell in <paramref name="map"/>, if any; never creates one.</summary>
    public abstract LayerEntry<TState>? FindLive(KeyEntry map, TContext context, string layer);

    /// <summary>Whether every sub-key's cell is idle at <paramref name="now"/>.</summary>
    public abstract bool AllIdle(KeyEntry map, long now);

    /// <summary>The request's (key, sub-key), for events.</summary>
    public abstract object KeyOf<TKey>(TKey key, TContext context, string layer);
}
