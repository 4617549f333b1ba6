using RateEngine.Limiters;

namespace RateEngine.Policies;

/// <summary>One key's state in one policy layer, plus what eviction and soft thresholds need.</summary>
internal sealed class LayerEntry<TState> : StateCell<TState>
{
    /// <summary>Marks an entry that eviction removed: whoever holds it looks the key up again.</summary>
    public static readonly object Evicted = new();

    /// <summary>The owning layer while the entry is live; <see cref="Evicted"/> once removed.</summary>
    public object Link = null!;

    /// <summary>A soft layer's thresholds already reported: (period, bit mask), packed by <c>EpochCount</c>.</summary>
    public long Reported;
}
