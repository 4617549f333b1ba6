using RateEngine.Limiters;
using RateEngine.Policies;
using RateEngine.Redis.Hybrid;
using RateEngine.Redis.Scripts;
using RateEngine.Timing;
using StackExchange.Redis;

namespace RateEngine.Redis.Policies;

/// <summary>
/// One layer of a <see cref="RedisRatePolicy{TContext}"/>: how to find a request's key and limit (on the client, before
/// anything is sent) and the values the policy scripts read for it (<see cref="Scripts.PolicyScripts"/>).
/// </summary>
internal sealed class RedisPolicyLayer<TContext>
{
    /// <summary>Lua's numbers are doubles, exact for integers up to 2^53 (a bucket's limit × period stays below it).</summary>
    internal const long MaxExact = 1L << 53;

    /// <summary>
    /// Limits and amounts stay at most 2^52, so that a count and the amount added to it stay within 2^53: at 2^53 itself a
    /// sum of 2^53 - 1 and 2 rounds down to the limit, and the check admits one unit past it.
    /// </summary>
    internal const long MaxAmount = 1L << 52;

    private readonly Func<TContext, string>? _keySelector;
    private readonly Func<TContext, string?>? _tierSelector;
    private volatile PolicyTiers? _tiers;
    private readonly CalendarSchedule? _calendar;
    private readonly long _p1;
    private readonly long _p2;

    public RedisPolicyLayer(
        string name, PolicyRule rule, Func<TContext, string>? keySelector, Func<TContext, string?>? tierSelector, PolicyTiers? tiers, string hashTag, TimeSpan leaseTimeout)
    {
        Name = name;
        Rule = rule;
        LeaseTimeout = leaseTimeout;
        _keySelector = keySelector;
        _tierSelector = tierSelector;
        _tiers = tiers;

        Reason = rule.Reason ?? PolicyLayer<TContext>.DefaultReason(name, rule);
        if (rule.SoftThresholds.Count > 0)
        {
            throw new ArgumentException($"Layer '{name}': soft layers are not served by the Redis policy (their threshold events are per node).", nameof(rule));
        }

        if (rule.Kind == PolicyRuleKind.SlidingWindowLog && rule.Meter != PolicyMeter.Requests)
        {
            throw new ArgumentException($"Layer '{name}': the sliding-window log counts requests (one member per permit), not tokens or money.", nameof(rule));
        }

        if (rule.Kind == PolicyRuleKind.SlidingWindowLog && rule.Limit is > RedisLimiter.MaxSlidingWindowLogPermitLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(rule), rule.Limit, $"Layer '{name}': a sliding-window log on Redis keeps one member per request, and its limit is at most {RedisLimiter.MaxSlidingWindowLogPermitLimit} (see RedisLimiter.MaxSlidingWindowLogPermitLimit).");
        }

        if (rule.Limit is > MaxAmount)
        {
            throw new ArgumentOutOfRangeException(nameof(rule), rule.Limit, $"Layer '{name}': a Redis policy's limits are at most 2^52, so that every sum stays exact in Lua's numbers.");
        }

        (Kind, _p1, _p2) = rule.Kind switch
        {
            PolicyRuleKind.FixedWindow => (1, Microseconds(rule.Window), 0L),
            PolicyRuleKind.SlidingWindowCounter => (2, CeilingDivide(Microseconds(rule.Window), rule.SegmentsPerWindow), rule.SegmentsPerWindow),
            PolicyRuleKind.SlidingWindowLog => (3, Microseconds(rule.Window), 0L),
            PolicyRuleKind.TokenBucket => (4, Microseconds(rule.Window), rule.TokensPerPeriod),
            PolicyRuleKind.Calendar => (5, 0L, 0L),
            PolicyRuleKind.Concurrency => (6, Microseconds(leaseTimeout), 0L),
            _ => throw new ArgumentOutOfRangeException(nameof(rule), rule.Kind, "Unknown rule."),
        };
        // The rule's shape is part of the key: two policies of one prefix with a layer of the same name but another
        // algorithm or window keep separate state (one would otherwise read the other's as its own, or as the wrong type).
        string shape = rule.Kind == PolicyRuleKind.Calendar ? $"cal-{rule.Period}-{rule.TimeZone.Id}" : $"k{Kind}-{(Kind == 6 ? 0 : _p1)}-{_p2}"; // a slot's timeout is no shape
        KeyPrefix = $"{{{hashTag}}}:{name}:{shape}:";
        if (rule.Limit is { } fixedLimit && Kind == 4 && fixedLimit > MaxExact / _p1)
        {
            throw new ArgumentOutOfRangeException(nameof(rule), rule.Limit, $"Layer '{name}': a bucket's limit × period in µs stays below 2^53, where Lua's numbers are exact.");
        }

        if (rule.Kind == PolicyRuleKind.Calendar)
        {
            // Ticks of 1 µs from the Unix epoch: a period's Start and End are what the scripts compare with the server's TIME.
            _calendar = new CalendarSchedule(DateTimeOffset.UnixEpoch, 1_000_000, monthly: rule.Period == CalendarPeriod.Month, rule.TimeZone);
        }
    }

    public string Name { get; }

    public PolicyRule Rule { get; }

    public string Reason { get; }

    /// <summary>The script's kind: 1 fixed window, 2 counter, 3 log, 4 bucket, 5 calendar, 6 concurrency.</summary>
    public int Kind { get; }

    public bool IsConcurrency => Kind == 6;

    /// <summary>How long a concurrency slot lives on Redis unless its lease renews it (every third of it) or releases it.</summary>
    public TimeSpan LeaseTimeout { get; }

    /// <summary>
    /// Whether the hybrid mode serves this layer from local blocks: a fixed window, a counter or a calendar budget, whose
    /// permits count in one window, segment or period that a block can be bounded by. A log, a bucket and a concurrency
    /// limit are decided on Redis per request.
    /// </summary>
    public bool IsBlockServed => Kind is 1 or 2 or 5;

    /// <summary>This node's blocks of the layer's keys (hybrid mode; made by the policy that owns the layer).</summary>
    public LocalReservations<LayerKey>? Blocks { get; set; }

    /// <summary>Whether a reconcile moves this layer (tokens and money; requests and slots are settled by admission and dispose).</summary>
    public bool IsWeighted => Rule.Meter != PolicyMeter.Requests && !IsConcurrency;

    /// <summary>
    /// How far <paramref name="used"/> (a lease's consumption so far, or its actual) goes past what the lease holds on this
    /// layer: what it reserved here plus the overrun already charged. Positive is an overrun to charge, negative what is
    /// left unused; 0 on a layer that counts requests or slots, which a cost never moves.
    /// </summary>
    public long PastReservation(RequestCost used, long reserved, long overrun) => IsWeighted ? used.On(Rule.Meter) - (reserved + overrun) : 0;

    /// <summary>
    /// What a lease disposed unreconciled gives back here if the layer refunds unreconciled estimates: the reservation less
    /// what step charges <paramref name="consumed"/> of it (spent, as an overrun past it was); a request layer's whole request.
    /// </summary>
    public long Unspent(RequestCost consumed, long reserved, long overrun) =>
        IsWeighted ? Math.Clamp(-PastReservation(consumed, reserved, overrun), 0, reserved) : reserved;

    /// <summary>Every key of a policy shares one hash tag, so a request's layers are one cluster slot and one script.</summary>
    public string KeyPrefix { get; }

    /// <summary>The version of the tiers of the policy that made this layer (a combination's layers keep their own policies').</summary>
    public TiersVersion TiersVersion { get; set; } = new();

    /// <summary>The tiers this layer reads its limit from (replaced whole by <see cref="RedisRatePolicy{TContext}.UpdateTiers"/>).</summary>
    public PolicyTiers? Tiers
    {
        get => _tiers;
        set => _tiers = value;
    }

    public long AmountOf(RequestCost cost) => IsConcurrency ? 1 : cost.On(Rule.Meter);

    /// <summary>The request's Redis key on this layer (user code runs here, before anything is sent).</summary>
    public RedisKey KeyOf(TContext context) => KeyPrefix + PartitionKeyOf(context);

    /// <summary>The request's key on this layer as its selector names it (empty for a global layer).</summary>
    public string PartitionKeyOf(TContext context) => _keySelector is null
        ? string.Empty
        : _keySelector(context) ?? throw new InvalidOperationException($"The key selector of layer '{Name}' returned null.");

    /// <summary>The hybrid mode's state of the request's key on this layer, made on first touch.</summary>
    public LayerKey BlockKeyOf(TContext context) => BlockKeyFor(PartitionKeyOf(context));

    /// <summary>The hybrid mode's state of a key on this layer, made on first touch (or after the idle sweep forgot it).</summary>
    public LayerKey BlockKeyFor(string partitionKey) => Blocks!.KeyOf(partitionKey, static (key, layer) => new LayerKey(key, layer.KeyPrefix), this);

    /// <summary>
    /// The key's live state: the key itself, or, once the idle sweep forgot it (a lease held it meanwhile), the state
    /// now in the table, which nothing else would find, seeded with the forgotten one's cap and request size if new.
    /// </summary>
    public LayerKey Live(LayerKey key)
    {
        if (!key.Forgotten)
        {
            return key;
        }

        LayerKey live = BlockKeyFor(key.PartitionKey);
        Interlocked.CompareExchange(ref live.Limit, Volatile.Read(ref key.Limit), 0);
        Volatile.Write(ref live.Unit, Math.Max(Volatile.Read(ref live.Unit), Volatile.Read(ref key.Unit)));
        return live;
    }

    /// <summary>The limit in force for the request (its tier's), or why there is none.</summary>
    public long? LimitOf(TContext context, out string? refusal)
    {
        refusal = null;
        if (Rule.Limit is { } fixedLimit)
        {
            return fixedLimit;
        }

        string? tier = _tierSelector?.Invoke(context);
        if (tier is not null && _tiers is { } tiers && tiers.TryGetLimit(tier, Name, out long limit))
        {
            if (limit <= (Kind == 4 ? Math.Min(MaxAmount, MaxExact / _p1) : MaxAmount))
            {
                return limit;
            }

            refusal = $"The limit of tier '{tier}' on layer '{Name}' ({limit}) is past 2^52 (or, on a bucket, its limit × period in µs past 2^53), where the Redis scripts stay exact.";
            return null;
        }

        refusal = ReasonPhrases.NoLimit(Name);
        return null;
    }

    /// <summary>
    /// The limit a request of <paramref name="amount"/> is decided under; null, with its refusal, when this layer can never
    /// admit it under its current limits (its tier has none here, or the amount is above it).
    /// </summary>
    public long? LimitFor(TContext context, long amount, out PolicyLease? refusal)
    {
        long? limit = LimitOf(context, out string? why);
        if (limit is { } cap && amount <= cap)
        {
            refusal = null;
            return cap;
        }

        refusal = new RefusedPolicyLease(Name, why ?? ReasonPhrases.AboveCap(Name, amount, limit.GetValueOrDefault()), null, Rule.IsServiceWide, permanent: true);
        return null;
    }

    /// <summary>Writes this layer's group of values (<see cref="Scripts.PolicyScripts.Stride"/>) at <paramref name="at"/>.</summary>
    public void WriteArguments(RedisValue[] values, int at, long limit, long amount, long tag, long clientNow)
    {
        values[at] = Kind;
        values[at + 1] = limit;
        values[at + 2] = amount;
        if (_calendar is not null)
        {
            // Three periods around the client's clock: the script keeps the one holding the server's TIME.
            CalendarSchedule.Span current = _calendar.Find(clientNow);
            values[at + 3] = _calendar.Find(current.Start - 1).Start;
            values[at + 4] = current.Start;
            values[at + 5] = current.End;
            values[at + 6] = _calendar.Find(current.End).End;
        }
        else
        {
            values[at + 3] = _p1;
            values[at + 4] = _p2;
            values[at + 5] = 0;
            values[at + 6] = 0;
        }

        values[at + 7] = tag;
    }

    /// <summary>Rounded up, as every Redis rule rounds (<see cref="RedisRule.CeilingMicroseconds"/>): never a shorter window.</summary>
    private static long Microseconds(TimeSpan span) => Math.Max(1, RedisRule.CeilingMicroseconds(span));

    private static long CeilingDivide(long value, long divisor) => (value + divisor - 1) / divisor;
}
