namespace RateEngine.Tests.Policies;

/// <summary>
/// The reference model of the property tests' policy: every layer is a period counter (fixed minute windows from the
/// policy's creation, calendar days in UTC, or a concurrency count), so its usage is an exact ledger the policy must match.
/// </summary>
public sealed class PolicyModel
{
    public const long MinuteTicks = TimeSpan.TicksPerMinute;

    private readonly DateTimeOffset _created;
    private readonly Dictionary<(string Layer, string Key), (long Period, long Used)> _ledger = [];

    public PolicyModel(DateTimeOffset created) => _created = created;

    public static readonly ModelLayer[] Layers =
    [
        new("requests/min", ModelPeriod.Minute, PolicyMeter.Requests, Keyed: true, Limit: 5),
        new("tokens/min", ModelPeriod.Minute, PolicyMeter.Tokens, Keyed: true, Limit: -1), // from the tier
        new("cost/day", ModelPeriod.Day, PolicyMeter.Money, Keyed: true, Limit: 1_500),
        new("streams", ModelPeriod.None, PolicyMeter.Requests, Keyed: true, Limit: 2),
        new("global cost/day", ModelPeriod.Day, PolicyMeter.Money, Keyed: false, Limit: 4_000),
    ];

    public long TierTokenLimit { get; set; } = 2_000;

    /// <summary>
    /// The policy under test. With <paramref name="sharedKeys"/> its keyed layers are given one selector instance, so they
    /// share one key table (one entry per user, evicted only when every layer's cell is idle); otherwise each has its own
    /// (each lambda below is its own cached delegate: one per place in the source, not per call).
    /// </summary>
    public static RatePolicy<string> CreatePolicy(TimeProvider time, long tierTokens, bool sharedKeys)
    {
        Func<string, string> shared = user => user;
        return new RatePolicyBuilder<string>()
            .UseTimeProvider(time)
            .UseTiers(_ => "t", new PolicyTiers { ["t"] = { ["tokens/min"] = tierTokens } })
            .AddLayer("requests/min", sharedKeys ? shared : user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 5))
            .AddLayer("tokens/min", sharedKeys ? shared : user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1)).Counting(PolicyMeter.Tokens))
            .AddLayer("cost/day", sharedKeys ? shared : user => user, PolicyRule.Calendar(CalendarPeriod.Day, 1_500).Counting(PolicyMeter.Money))
            .AddLayer("streams", sharedKeys ? shared : user => user, PolicyRule.Concurrency(2))
            .AddGlobalLayer("global cost/day", PolicyRule.Calendar(CalendarPeriod.Day, 4_000).Counting(PolicyMeter.Money))
            .Build();
    }

    public long LimitOf(ModelLayer layer) => layer.Limit > 0 ? layer.Limit : TierTokenLimit;

    public long PeriodOf(ModelLayer layer, DateTimeOffset now) => layer.Period switch
    {
        ModelPeriod.Minute => (now - _created).Ticks / MinuteTicks,
        ModelPeriod.Day => (long)(now.UtcDateTime.Date - _created.UtcDateTime.Date).TotalDays,
        _ => 0,
    };

    public long Used(ModelLayer layer, string user, DateTimeOffset now)
    {
        string key = layer.Keyed ? user : string.Empty;
        return _ledger.TryGetValue((layer.Name, key), out var entry) && entry.Period == PeriodOf(layer, now) ? entry.Used : 0;
    }

    /// <summary>Adds (or, negative, takes back) <paramref name="amount"/> in the current period; a refund only in <paramref name="period"/>.</summary>
    public long Add(ModelLayer layer, string user, DateTimeOffset now, long amount, long? period = null)
    {
        string key = layer.Keyed ? user : string.Empty;
        long current = PeriodOf(layer, now);
        if (period is { } asked && asked != current)
        {
            return 0; // the period it was counted in is over: it came back with it
        }

        long used = Used(layer, user, now) + amount;
        if (used < 0)
        {
            throw new InvalidOperationException($"model usage of {layer.Name} went negative");
        }

        _ledger[(layer.Name, key)] = (current, used);
        return -amount;
    }
}

public enum ModelPeriod
{
    None,
    Minute,
    Day,
}

public sealed record ModelLayer(string Name, ModelPeriod Period, PolicyMeter Meter, bool Keyed, long Limit);

/// <summary>A lease as the model sees it: what it holds on each layer, in which period.</summary>
public sealed class ModelLease(PolicyLease lease, string user, RequestCost estimate, long[] periods)
{
    public PolicyLease Lease { get; } = lease;

    public string User { get; } = user;

    public RequestCost Estimate { get; } = estimate;

    public long[] Periods { get; } = periods;

    public long[] Reserved { get; } = new long[PolicyModel.Layers.Length];

    public long[] Overrun { get; } = new long[PolicyModel.Layers.Length];

    public RequestCost Consumed { get; set; }

    public bool Settled { get; set; }

    public bool Disposed { get; set; }
}
