using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Policies;

/// <summary>Builds the layer of one rule: the algorithm it names, on the policy's clock.</summary>
internal static class LayerFactory
{
    public static PolicyLayer<TContext> Create<TContext, TKey>(
        string name, PolicyRule rule, Func<TContext, TKey>? keySelector, LayerSettings<TContext> settings, IEqualityComparer<TKey>? comparer, SubKeySpec<TContext>? subKeys = null)
        where TKey : notnull
    {
        LimiterClock clock = settings.Clock;
        long windowTicks = rule.Window > TimeSpan.Zero ? Math.Max(1, clock.ToTicks(rule.Window)) : 0;
        return rule.Kind switch
        {
            PolicyRuleKind.FixedWindow => Layer<TContext, TKey, FixedWindow, long>(
                name, rule, keySelector, settings, comparer, subKeys, limit => new FixedWindow(limit, windowTicks, clock)),
            PolicyRuleKind.SlidingWindowCounter => Layer<TContext, TKey, SlidingWindowCounter, CounterState>(
                name, rule, keySelector, settings, comparer, subKeys, limit => new SlidingWindowCounter(
                    limit, Math.Max(1, (windowTicks + rule.SegmentsPerWindow - 1) / rule.SegmentsPerWindow), rule.SegmentsPerWindow, clock)),
            PolicyRuleKind.SlidingWindowLog => Layer<TContext, TKey, RequestLog, LogState>(
                name, rule, keySelector, settings, comparer, subKeys, limit => new RequestLog(new SlidingWindowLog((int)limit, windowTicks))),
            PolicyRuleKind.TokenBucket => Layer<TContext, TKey, TokenBucket, long>(
                name, rule, keySelector, settings, comparer, subKeys, limit => new TokenBucket(limit, rule.TokensPerPeriod, windowTicks, clock, takesCharges: true)),
            PolicyRuleKind.Calendar => CalendarLayer(name, rule, keySelector, settings, comparer, subKeys),
            PolicyRuleKind.Concurrency => Layer<TContext, TKey, ConcurrencyLimit, long>(
                name, rule, keySelector, settings, comparer, subKeys, limit => new ConcurrencyLimit(limit)),
            _ => throw new ArgumentOutOfRangeException(nameof(rule), rule.Kind, "Unknown rule."),
        };
    }

    private static PolicyLayer<TContext> CalendarLayer<TContext, TKey>(
        string name, PolicyRule rule, Func<TContext, TKey>? keySelector, LayerSettings<TContext> settings, IEqualityComparer<TKey>? comparer, SubKeySpec<TContext>? subKeys)
        where TKey : notnull
    {
        var schedule = new CalendarSchedule(settings.OriginUtc, settings.Clock.Provider.TimestampFrequency, monthly: rule.Period == CalendarPeriod.Month, rule.TimeZone);
        return Layer<TContext, TKey, CalendarBudget, BudgetPeriodState>(name, rule, keySelector, settings, comparer, subKeys, limit => new CalendarBudget(limit, schedule, settings.Clock));
    }

    private static KeyedLayer<TContext, TKey, TAlgorithm, TState> Layer<TContext, TKey, TAlgorithm, TState>(
        string name,
        PolicyRule rule,
        Func<TContext, TKey>? keySelector,
        LayerSettings<TContext> settings,
        IEqualityComparer<TKey>? comparer,
        SubKeySpec<TContext>? subKeys,
        Func<long, TAlgorithm> createAlgorithm)
        where TKey : notnull
        where TAlgorithm : struct, IWeightedAlgorithm<TState> =>
        new(name, rule, KeysOf(keySelector, settings, comparer), subKeys, settings.MaxSubKeysPerKey, settings.TierSelector, createAlgorithm, settings.Tiers, settings.Clock, settings.OnThreshold);

    /// <summary>The key table of <paramref name="keySelector"/>: the one an earlier layer of the same selector and comparer built, or a new one.</summary>
    private static KeyTable<TContext, TKey>? KeysOf<TContext, TKey>(Func<TContext, TKey>? keySelector, LayerSettings<TContext> settings, IEqualityComparer<TKey>? comparer)
        where TKey : notnull
    {
        if (keySelector is null)
        {
            return null;
        }

        if (!settings.KeyTables.TryGetValue((keySelector, comparer), out object? table))
        {
            table = new KeyTable<TContext, TKey>(keySelector, comparer, settings.Clock, settings.MaxKeys);
            settings.KeyTables[(keySelector, comparer)] = table;
        }

        return (KeyTable<TContext, TKey>)table;
    }
}
