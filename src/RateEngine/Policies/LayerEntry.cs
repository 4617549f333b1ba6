namespace RateEngine.Policies;

/// <summary>One key's state in one policy layer (a cell of a <see cref="KeyEntry"/>), plus what soft thresholds need.</summary>
internal sealed class LayerEntry<TState> : KeyEntry
{
    public TState State = default!;

    /// <summary>A soft layer's thresholds already reported: (period, bit mask), packed by <c>EpochCount</c>.</summary>
    public long Reported;
}
