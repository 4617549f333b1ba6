namespace RateEngine.Policies;

/// <summary>
/// One layer of a policy, as the policy drives it: look the request's key up (phase 1, where user code runs and nothing
/// changes), then reserve on the key's state at the policy's one clock read (phase 2), and later refund, charge or release.
/// </summary>
internal abstract class PolicyLayer<TContext>(string name, PolicyRule rule)
{
    public string Name { get; } = name;

    public PolicyRule Rule { get; } = rule;

    // Fields, not properties over the rule: every request reads them on every layer, and the rule is one more cache line.
    public readonly PolicyMeter Meter = rule.Meter;

    public readonly bool IsSoft = rule.SoftThresholds.Count > 0;

    /// <summary>A concurrency layer: its slot is held until the lease is disposed.</summary>
    public readonly bool IsConcurrency = rule.Kind == PolicyRuleKind.Concurrency;

    /// <summary>
    /// Whether a reservation taken a moment ago can always be undone exactly, whatever other requests did meanwhile. Not
    /// the log's or the bucket's: they undo an admission only while no other admission on the key has followed it (the
    /// bucket may have refilled in between), so the policy decides them last, where a refusal rolls them back least often,
    /// and a layer decided last is never rolled back.
    /// </summary>
    public abstract bool RollsBackExactly { get; }

    /// <summary>The human reason of this layer's refusals.</summary>
    public string Reason { get; } = rule.Reason ?? DefaultReason(name, rule);

    /// <summary>
    /// Phase 1: the request's key, entry and tier, checked against the tier's limit. Null when the request may go on to
    /// phase 2; otherwise why it is refused, and whether for good (<see cref="PolicyLease.IsPermanentRefusal"/>). Changes no usage.
    /// </summary>
    public abstract string? Find(TContext context, long amount, ref LayerHold hold, out bool permanent);

    /// <summary>Phase 2: reserves <paramref name="amount"/> (0: only checks that the layer is not exhausted). False when refused.</summary>
    public abstract bool TryReserve(TContext context, ref LayerHold hold, long now, long amount, out long retryAfter);

    /// <summary>
    /// Why <see cref="TryReserve"/> refused, when it was not the limit: the key's entry was evicted during the decision and
    /// its table (or its map of sub-keys) had no room for it again. Null when the limit refused.
    /// </summary>
    public virtual string? NoRoomReason(in LayerHold hold) => null;

    /// <summary>What <see cref="RetryAfter"/> returns for a layer that would refuse with no delay to promise (a full concurrency layer: a slot frees when a lease is disposed).</summary>
    public const long NoPromise = -1;

    /// <summary>
    /// Ticks until <paramref name="amount"/> would pass, for a layer found in phase 1 (read-only); 0 when it would pass now,
    /// <see cref="NoPromise"/> when it would refuse for a time nobody can know.
    /// </summary>
    public abstract long RetryAfter(ref LayerHold hold, long now, long amount);

    /// <summary>
    /// Gives back <paramref name="amount"/> of the hold's reservation (exactly while its window counts it) and returns how much
    /// came back: 0 when its window has passed (it came back with the window) or the algorithm cannot undo it exactly.
    /// </summary>
    /// <param name="hold">The reservation; it gives the amount up whatever comes back.</param>
    /// <param name="amount">What to give back, at most what the hold still reserves.</param>
    /// <param name="now">The caller's clock reading, if it has one; a layer whose refunds expire reads the clock otherwise.</param>
    public abstract long Refund(ref LayerHold hold, long amount, long? now = null);

    /// <summary>Counts an overrun of <paramref name="amount"/> past the hold's reservation, whatever the limit.</summary>
    public abstract void Charge(TContext context, ref LayerHold hold, long now, long amount);

    /// <summary>The key's usage at <paramref name="now"/> without consuming anything.</summary>
    public abstract LayerUsage GetUsage(TContext context, long now);

    /// <summary>The request's key on this layer, for events (null for a layer without keys).</summary>
    public abstract object? KeyOf(TContext context);

    /// <summary>After every layer reserved: what the layer reports of this request's admission (a soft layer's thresholds).</summary>
    public virtual void Admitted(TContext context, ref LayerHold hold)
    {
    }

    /// <summary>
    /// Builds this layer's tiers from <paramref name="tiers"/> (usage already counted is kept) and returns what publishes them: a policy validates every
    /// layer's tiers before it publishes any, so a bad limit on one layer leaves every layer on its old tiers.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A limit is out of the layer's range.</exception>
    public abstract Action PrepareTiers(PolicyTiers tiers);

    /// <summary>Validates and publishes this layer's tiers at once (a layer on its own, as the builder makes it).</summary>
    public void UpdateTiers(PolicyTiers tiers) => PrepareTiers(tiers)();

    /// <summary>Writes this layer's limit of every tier into <paramref name="tiers"/> (nothing for a layer with a fixed limit).</summary>
    public abstract void CopyTiersTo(PolicyTiers tiers);

    /// <summary>
    /// After a tier update: whether the limit <paramref name="hold"/> was reserved on is still its tier's, or (on a layer that
    /// refuses) a higher one, which a request that passed the lower one passes too. True for a layer without tiers.
    /// </summary>
    public abstract bool DecidedOnTheLimitInForce(ref LayerHold hold);

    /// <summary>The layer's key table, shared with every layer of the same key selector; null for a layer without keys.</summary>
    public abstract IKeyTable? Keys { get; }

    /// <summary>The reason a layer without its own gives ("daily cost cap reached (user cost/day)"); the Redis policy's layers too.</summary>
    internal static string DefaultReason(string name, PolicyRule rule)
    {
        string what = rule.Meter switch
        {
            PolicyMeter.Tokens => "token budget",
            PolicyMeter.Money => "cost cap",
            _ => rule.Kind == PolicyRuleKind.Concurrency ? "concurrent request limit" : "request rate limit",
        };
        string when = rule.Kind switch
        {
            PolicyRuleKind.Calendar => rule.Period == CalendarPeriod.Day ? "daily " : "monthly ",
            _ => string.Empty,
        };
        return $"{when}{what} reached ({name})";
    }
}
