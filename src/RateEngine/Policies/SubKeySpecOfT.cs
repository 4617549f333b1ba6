using RateEngine.Timing;

namespace RateEngine.Policies;

/// <inheritdoc cref="SubKeySpec{TContext}"/>
internal sealed class SubKeySpec<TContext, TSubKey>(Func<TContext, TSubKey> selector, IEqualityComparer<TSubKey>? comparer) : SubKeySpec<TContext>
    where TSubKey : notnull
{
    public override SubKeys<TContext, TState> Create<TState>(int maxPerKey, LimiterClock clock, Func<long, TState> createState, Func<LayerEntry<TState>, long, bool> isIdle) =>
        new SubKeys<TContext, TSubKey, TState>(selector, comparer, maxPerKey, clock, createState, isIdle);
}
