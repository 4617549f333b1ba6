using System.Collections.Frozen;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Policies;

/// <summary>
/// A policy layer on one weighted algorithm: per-key state as a cell of a <see cref="KeyTable{TContext,TKey}"/> (shared
/// with the other layers of the same key selector), or one state for a layer without keys, and the limit from a fixed
/// value or the request's tier.
/// </summary>
/// <remarks>
/// <b>Tiers</b> change the limit, never the state's shape: every tier's algorithm has the layer's window, so a key's
/// state is read by whichever tier is in force at each decision and its usage carries over a tier change.
/// </remarks>
internal sealed class KeyedLayer<TContext, TKey, TAlgorithm, TState> : PolicyLayer<TContext>, IKeyMember
    where TKey : notnull
    where TAlgorithm : struct, IWeightedAlgorithm<TState>
{
    private readonly KeyTable<TContext, TKey>? _keys;
    private readonly SubKeys<TContext, TState>? _subKeys;
    private readonly int _cell;
    private readonly Func<TContext, string?>? _tierSelector;
    private readonly Func<long, TAlgorithm> _createAlgorithm;
    private readonly LayerEntry<TState>? _single;
    private readonly LimiterClock _clock;
    private readonly Action<ThresholdCrossing>? _onThreshold;
    private readonly TAlgorithm _shape;
    private readonly LayerTier<TAlgorithm>? _fixed;
    private readonly long[] _thresholdFractions;
    private FrozenDictionary<string, LayerTier<TAlgorithm>> _tiers = FrozenDictionary<string, LayerTier<TAlgorithm>>.Empty;

    public KeyedLayer(
        string name,
        PolicyRule rule,
        KeyTable<TContext, TKey>? keys,
        SubKeySpec<TContext>? subKeys,
        int maxSubKeysPerKey,
        Func<TContext, string?>? tierSelector,
        Func<long, TAlgorithm> createAlgorithm,
        PolicyTiers? tiers,
        LimiterClock clock,
        Action<ThresholdCrossing>? onThreshold)
        : base(name, rule)
    {
        _keys = keys;
        _tierSelector = tierSelector;
        _createAlgorithm = createAlgorithm;
        _clock = clock;
        _onThreshold = onThreshold;

        // Any limit gives the state's shape: refunds, charges and idleness do not depend on the limit.
        _shape = createAlgorithm(rule.Limit ?? 1);
        if (rule.Limit is { } limit)
        {
            _fixed = new LayerTier<TAlgorithm>(null, limit, _shape);
        }
        else
        {
            UpdateTiers(tiers ?? new PolicyTiers());
        }

        _thresholdFractions = [.. rule.SoftThresholds.Select(fraction => (long)Math.Round(fraction * 1_000_000))]; // 1.001 is 1,001,000, not 1,000,999
        _subKeys = subKeys?.Create<TState>(maxSubKeysPerKey, clock, now => _shape.CreateState(now), (cell, now) => IsIdleState(cell, now));
        if (keys is null)
        {
            // Counting from the current window, as a key's cells do: a state at epoch 0 on a clock near the epochs' wrap
            // would read as a window ahead and decide every request there (one limit for up to 2^20 windows).
            _single = new LayerEntry<TState> { State = _shape.CreateState(clock.Now()) };
        }
        else
        {
            _cell = keys.Join(this);
        }
    }

    public override bool RollsBackExactly => Rule.Kind is not (PolicyRuleKind.SlidingWindowLog or PolicyRuleKind.TokenBucket);

    public override IKeyTable? Keys => _keys;

    public override string? Find(TContext context, long amount, ref LayerHold hold, out bool permanent)
    {
        LayerTier<TAlgorithm>? tier = _fixed ?? TierOf(context);
        permanent = !IsSoft && (tier is null || amount > tier.Limit);
        if (tier is null)
        {
            // A soft layer never refuses: with no limit for this tier it has no threshold to report, so it goes untracked.
            return IsSoft ? null : Limiters.ReasonPhrases.NoLimit(Name);
        }

        if (amount > tier.Limit && !IsSoft)
        {
            return Limiters.ReasonPhrases.AboveCap(Name, amount, tier.Limit);
        }

        hold.Tier = tier;
        if (_single is not null)
        {
            hold.Entry = _single;
            return null;
        }

        // A layer that shares its key table with an earlier layer of the request finds the key's entry in its hold already.
        KeyEntry found = hold.Key ??= _keys!.FindOrCreate(_keys.SelectKey(context, Name), out bool colliding) ?? (colliding ? KeyEntry.Colliding : KeyEntry.Missing);
        if (ReferenceEquals(found, KeyEntry.Missing) || ReferenceEquals(found, KeyEntry.Colliding))
        {
            // The refusal says which: a table full of live keys, or a degenerate (or hostile) hash code.
            return IsSoft ? null : ReferenceEquals(found, KeyEntry.Colliding) ? Limiters.ReasonPhrases.TooManyCollisions : Limiters.ReasonPhrases.PartitionsFull;
        }

        hold.Entry = CellOf(found, context);
        if (hold.Entry is null)
        {
            return IsSoft ? null : _subKeys!.FullReason(Name);
        }

        return null;
    }

    public override bool TryReserve(TContext context, ref LayerHold hold, long now, long amount, out long retryAfter)
    {
        var tier = Unsafe.As<LayerTier<TAlgorithm>>(hold.Tier!);
        if (hold.Entry is null)
        {
            retryAfter = 0;
            return true; // a soft layer whose table is full: it never refuses, it just cannot track this key
        }

        while (true)
        {
            var entry = Unsafe.As<LayerEntry<TState>>(hold.Entry!);
            TAlgorithm algorithm = tier.Algorithm;
            bool admitted;
            Admission admission;
            if (IsSoft)
            {
                if (amount == 0)
                {
                    retryAfter = 0;
                    return true; // a soft layer never refuses, and a probe charges nothing
                }

                admission = algorithm.Charge(ref entry.State, now, amount);
                admitted = true;
                retryAfter = 0;
            }
            else if (amount == 0)
            {
                admission = default;
                admitted = algorithm.GetAvailablePermits(ref entry.State, now) > 0;
                if (_single is null && IsLost(ref hold))
                {
                    // Either answer read on a dead entry is decided again on the key's live entry: a refusal, because a dead
                    // entry may count admissions that were discarded and decided again there; an admission, because only
                    // idle entries are evicted, so a dead one reads "room left" whatever the live one holds.
                    if (!FindAgain(context, ref hold))
                    {
                        retryAfter = 0;
                        return false;
                    }

                    now = _clock.Now(); // after the lookup: the live entry may be younger than any earlier read
                    continue;
                }

                retryAfter = admitted || IsConcurrency ? 0 : algorithm.GetRetryAfter(ref entry.State, now, 1);
                return admitted;
            }
            else
            {
                admitted = algorithm.TryAcquire(ref entry.State, now, amount, out admission, out retryAfter);
            }

            if (!admitted)
            {
                if (_single is null && IsLost(ref hold))
                {
                    // Refused by what a dead entry still counts: decide again on the key's live entry.
                    if (!FindAgain(context, ref hold))
                    {
                        retryAfter = 0;
                        return IsSoft;
                    }

                    now = _clock.Now(); // after the lookup: the live entry may be younger than any earlier read
                    continue;
                }

                if (IsConcurrency)
                {
                    retryAfter = 0; // a slot frees when a lease is disposed: no delay to promise
                }

                return false;
            }

            if (_single is null && IsLost(ref hold))
            {
                // Decide again on the key's live entry, at a clock read taken after finding it.
                if (!FindAgain(context, ref hold))
                {
                    retryAfter = 0;
                    return IsSoft; // the table filled up meanwhile: a soft layer goes on untracked, a hard one refuses
                }

                now = _clock.Now(); // after the lookup: the live entry may be younger than any earlier read
                continue;
            }

            hold.Admission = admission;
            hold.Reserved = admission.Permits; // a soft layer's charge may count less (saturated): refunds never exceed it
            return true;
        }
    }

    public override string? NoRoomReason(in LayerHold hold) =>
        IsSoft || _single is not null || hold.Entry is not null ? null
        : hold.Key is null ? Limiters.ReasonPhrases.PartitionsFull
        : ReferenceEquals(hold.Key, KeyEntry.Colliding) ? Limiters.ReasonPhrases.TooManyCollisions
        : _subKeys!.FullReason(Name);

    public override long RetryAfter(ref LayerHold hold, long now, long amount)
    {
        if (hold.Entry is null || IsSoft)
        {
            return 0;
        }

        var tier = Unsafe.As<LayerTier<TAlgorithm>>(hold.Tier!);
        var entry = Unsafe.As<LayerEntry<TState>>(hold.Entry!);
        TAlgorithm algorithm = tier.Algorithm;
        if (IsConcurrency)
        {
            return algorithm.GetAvailablePermits(ref entry.State, now) < Math.Max(amount, 1) ? NoPromise : 0;
        }

        return algorithm.GetRetryAfter(ref entry.State, now, Math.Clamp(amount, 1, tier.Limit));
    }

    public override long Refund(ref LayerHold hold, long amount, long? now = null)
    {
        amount = Math.Min(amount, hold.Reserved);
        if (amount <= 0 || hold.Entry is null)
        {
            return 0;
        }

        // The hold gives the amount up whatever the algorithm says, so nothing is ever refunded twice.
        var entry = Unsafe.As<LayerEntry<TState>>(hold.Entry!);
        bool whole = amount == hold.Reserved && hold.Reserved == hold.Admission.Permits;
        hold.Reserved -= amount;

        // An admission a refund horizon old has all its permits back already; for a fixed window or a counter, one 2^33
        // periods old would match the current period (they compare epochs modulo 2^33) and free permits counted there.
        long horizon = _shape.RefundHorizon;
        if (horizon != long.MaxValue && !hold.Admission.IsRefundableAt(now ?? _clock.Now(), horizon))
        {
            return 0;
        }

        bool freed = whole ? _shape.Refund(ref entry.State, hold.Admission) : _shape.Refund(ref entry.State, hold.Admission, amount);
        return freed ? amount : 0;
    }

    /// <summary>
    /// A soft layer reports the thresholds its reservation reached once the whole request is admitted: a request that a
    /// later layer refuses is rolled back, and its crossing must not use up the period's one report of that threshold.
    /// </summary>
    public override void Admitted(TContext context, ref LayerHold hold)
    {
        if (IsSoft && hold.Reserved > 0 && hold.Entry is not null)
        {
            ReportThresholds(context, Unsafe.As<LayerEntry<TState>>(hold.Entry), Unsafe.As<LayerTier<TAlgorithm>>(hold.Tier!), hold.Admission);
        }
    }

    public override void Charge(TContext context, ref LayerHold hold, long now, long amount)
    {
        if (amount <= 0 || hold.Entry is null)
        {
            return;
        }

        while (true)
        {
            // The key may have been evicted since the reservation (its window ended): an overrun still counts, on the
            // key's live entry, by the same CAS-then-read protocol as an admission.
            var entry = Unsafe.As<LayerEntry<TState>>(hold.Entry!);
            Admission charge = _shape.Charge(ref entry.State, now, amount);
            if (_single is null && IsLost(ref hold))
            {
                KeyEntry? lostKey = hold.Key;
                object? lostEntry = hold.Entry;
                if (!FindAgain(context, ref hold))
                {
                    // The table is full of live keys: nowhere to count it now (see src/DESIGN.md, bounds). The hold stays
                    // on the dead entry, so the lease's next charge finds it lost and looks again, where it may find room.
                    hold.Key = lostKey;
                    hold.Entry = lostEntry;
                    return;
                }

                now = _clock.Now(); // after the lookup: the live entry may be younger than any earlier read
                continue;
            }

            hold.Overrun += charge.Permits; // what was counted (a charge saturates), so a reconcile settles from the truth

            // A stream's steps are judged against the tier in force now (tiers change at run time, and so may the request's
            // tier): the admission's could report a crossing late, or use up a threshold the current limit then never shows.
            if (IsSoft && (_fixed ?? TierOf(context)) is { } current)
            {
                ReportThresholds(context, entry, current, charge);
            }

            return;
        }
    }

    public override LayerUsage GetUsage(TContext context, long now)
    {
        LayerTier<TAlgorithm>? tier = _fixed ?? TierOf(context);
        long limit = tier?.Limit ?? 0;
        LayerEntry<TState>? entry = _single ?? (_keys!.FindLive(_keys.SelectKey(context, Name)) is { } found
            ? (_subKeys is null ? Unsafe.As<LayerEntry<TState>>(found.Cell(_cell)) : _subKeys.FindLive(found.Cell(_cell), context, Name))
            : null);
        if (entry is null)
        {
            return new LayerUsage(Name, limit, 0, TimeSpan.Zero); // never seen, or evicted as idle: nothing counted
        }

        return new LayerUsage(Name, limit, _shape.GetUsed(ref entry.State, now), _clock.ToTimeSpan(_shape.GetResetAfter(ref entry.State, now)));
    }

    public override object? KeyOf(TContext context) =>
        _keys is null ? null : _subKeys is null ? _keys.SelectKey(context, Name) : _subKeys.KeyOf(_keys.SelectKey(context, Name), context, Name);

    public KeyEntry CreateCell(long now) => _subKeys is null ? new LayerEntry<TState> { State = _shape.CreateState(now) } : _subKeys.CreateMap();

    public bool IsIdle(KeyEntry cell, long now) => _subKeys is null ? IsIdleState(Unsafe.As<LayerEntry<TState>>(cell), now) : _subKeys.AllIdle(cell, now);

    public override Action PrepareTiers(PolicyTiers tiers)
    {
        if (_fixed is not null)
        {
            return static () => { };
        }

        var byTier = new Dictionary<string, LayerTier<TAlgorithm>>(StringComparer.Ordinal);
        foreach (string tierName in tiers.Names)
        {
            if (tiers.TryGetLimit(tierName, Name, out long limit))
            {
                CheckLimit(limit, tierName);
                byTier[tierName] = new LayerTier<TAlgorithm>(tierName, limit, _createAlgorithm(limit));
            }
        }

        FrozenDictionary<string, LayerTier<TAlgorithm>> prepared = byTier.ToFrozenDictionary(StringComparer.Ordinal);
        return () => Volatile.Write(ref _tiers, prepared);
    }

    public override bool DecidedOnTheLimitInForce(ref LayerHold hold)
    {
        if (_fixed is not null || hold.Tier is not LayerTier<TAlgorithm> decided)
        {
            return true;
        }

        // A hard layer's request that passed a limit passes any higher one; a soft layer's thresholds are fractions of it.
        return Volatile.Read(ref _tiers).TryGetValue(decided.Name!, out LayerTier<TAlgorithm>? current)
            && (IsSoft ? current.Limit == decided.Limit : current.Limit >= decided.Limit);
    }

    public override void CopyTiersTo(PolicyTiers tiers)
    {
        foreach ((string tierName, LayerTier<TAlgorithm> tier) in Volatile.Read(ref _tiers))
        {
            tiers[tierName][Name] = tier.Limit;
        }
    }

    private void CheckLimit(long limit, string tier)
    {
        long most = Rule.Kind == PolicyRuleKind.Calendar ? long.MaxValue / 2 : int.MaxValue;
        if (limit > most)
        {
            throw new ArgumentOutOfRangeException("tiers", limit, $"Tier '{tier}' sets layer '{Name}' to {limit}; a {Rule.Kind} layer takes at most {most}.");
        }

        PolicyRule.CheckReachable(Rule.Kind, limit, Rule.SoftThresholds, "tiers");
    }

    private LayerTier<TAlgorithm>? TierOf(TContext context)
    {
        string? name = _tierSelector!(context);
        return name is not null && Volatile.Read(ref _tiers).TryGetValue(name, out LayerTier<TAlgorithm>? tier) ? tier : null;
    }

    private bool IsIdleState(LayerEntry<TState> cell, long now) => _shape.GetFullSince(ref cell.State, now) is not null && !ReportedThisPeriod(cell, now);

    /// <summary>
    /// Whether a soft layer's cell has reported thresholds in the period now in force, or a later one (a sweep's clock
    /// reading may be older than a report made across a period's change): its record of them must stay until that period
    /// ends, or a key whose usage went back to zero (a refund) would be evicted and report them again.
    /// </summary>
    private bool ReportedThisPeriod(LayerEntry<TState> cell, long now) =>
        IsSoft && Volatile.Read(ref cell.Reported) is var word and not 0 && _shape is IPeriodic periodic && EpochCount.Distance(periodic.PeriodAt(now), word) <= 0;

    /// <summary>This layer's cell of a key's entry: the entry's own, or the request's sub-key's (null when its map is full).</summary>
    private LayerEntry<TState>? CellOf(KeyEntry found, TContext context) =>
        _subKeys is null ? Unsafe.As<LayerEntry<TState>>(found.Cell(_cell)) : _subKeys.FindOrCreate(found.Cell(_cell), context, Name);

    /// <summary>After an admission on the hold's cell: whether an eviction took the key's entry, or the sub-key's cell.</summary>
    private bool IsLost(ref LayerHold hold) =>
        KeyEntry.IsGone(ref hold.Key!.Link) || (_subKeys is not null && KeyEntry.IsGone(ref Unsafe.As<LayerEntry<TState>>(hold.Entry!).Link));

    /// <summary>After an eviction took the hold's entry or cell: the live ones (false when there is no room for them).</summary>
    private bool FindAgain(TContext context, ref LayerHold hold)
    {
        KeyEntry? found = _keys!.FindOrCreate(_keys.SelectKey(context, Name), out bool colliding);

        // The hold changes only once both are found: a sub-key selector that throws must leave it on the evicted entry, which
        // the next charge then finds lost again. A live entry beside the old cell would hide that the cell is dead.
        LayerEntry<TState>? cell = found is null ? null : CellOf(found, context);
        hold.Key = found ?? (colliding ? KeyEntry.Colliding : null);
        hold.Entry = cell;
        return cell is not null;
    }

    /// <summary>Clears threshold <paramref name="bit"/> of <paramref name="period"/> in the entry's reported mask.</summary>
    private static void Unreport(LayerEntry<TState> entry, long period, int bit)
    {
        while (true)
        {
            long word = Volatile.Read(ref entry.Reported);
            if (!EpochCount.Holds(word, period) || (EpochCount.Count(word) & (1L << bit)) == 0)
            {
                return;
            }

            if (Interlocked.CompareExchange(ref entry.Reported, EpochCount.Pack(period, EpochCount.Count(word) & ~(1L << bit)), word) == word)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Reports each threshold the key's usage reached with <paramref name="admission"/> in its period, once: a CAS on the
    /// entry's reported mask for that period decides which thread reports, so concurrent admissions report each threshold
    /// exactly once. The usage is the admission's own (what its period counted right after it), not the state's at a later
    /// read, which an admission of the next period could already have moved on, losing the crossing.
    /// </summary>
    private void ReportThresholds(TContext context, LayerEntry<TState> entry, LayerTier<TAlgorithm> tier, in Admission admission)
    {
        long period = admission.Marker;
        long used = ((IPeriodic)_shape).UsedAfter(admission);
        Int128 reachedMillionths = (Int128)used * 1_000_000;
        for (int i = 0; i < _thresholdFractions.Length; i++)
        {
            if (reachedMillionths < (Int128)_thresholdFractions[i] * tier.Limit)
            {
                return;
            }

            while (true)
            {
                long word = Volatile.Read(ref entry.Reported);
                long mask = EpochCount.Holds(word, period) ? EpochCount.Count(word) : 0;
                if (EpochCount.Distance(period, word) < 0 || (mask & (1L << i)) != 0)
                {
                    break; // reported already (or the word moved to a later period)
                }

                // The key first: a selector that throws must not leave the threshold marked and never reported.
                object? key = _onThreshold is null ? null : KeyOf(context);
                if (Interlocked.CompareExchange(ref entry.Reported, EpochCount.Pack(period, mask | (1L << i)), word) == word)
                {
                    if (_onThreshold is { } listeners)
                    {
                        ExceptionDispatchInfo? failure = null;
                        bool taken = Listeners.InvokeEach(listeners, new ThresholdCrossing(Name, key, Rule.SoftThresholds[i], used, tier.Limit), ref failure);

                        // No listener took the report (an acquire is rolled back for it, so its crossing did not happen; a
                        // charge stands): the threshold stays unreported, for the next crossing. Once one took it, it is
                        // reported: the next crossing would tell that one again.
                        if (!taken)
                        {
                            Unreport(entry, period, i);
                        }

                        failure?.Throw();
                    }

                    break;
                }
            }
        }
    }
}
