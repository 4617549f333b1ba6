using RateEngine.Timing;

namespace RateEngine.Policies;

/// <summary>A layer's sub-key selector and comparer, until the layer knows its state type and builds its <see cref="SubKeys{TContext,TState}"/>.</summary>
internal abstract class SubKeySpec<TContext>
{
    public abstract SubKeys<TContext, TState> Create<TState>(int maxPerKey, LimiterClock clock, Func<long, TState> createState, Func<LayerEntry<TState>, long, bool> isIdle);
}
