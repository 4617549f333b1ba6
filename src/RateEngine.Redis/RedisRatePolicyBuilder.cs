namespace RateEngine.Redis;

/// <summary>
/// Builds a <see cref="RedisRatePolicy{TContext}"/>: the layers of a <see cref="RatePolicy{TContext}"/>, kept on Redis and
/// decided for every node at once.
/// </summary>
/// <typeparam name="TContext">What the application knows about a request.</typeparam>
public sealed class RedisRatePolicyBuilder<TContext>
{
    private readonly RedisLimiterOptions _options;
    private readonly List<(string Name, PolicyRule Rule, Func<TContext, string>? Keys, Func<TContext, string?>? Tier)> _layers = [];
    private Func<TContext, string?>? _tierSelector;
    private PolicyTiers? _tiers;
    private TimeSpan _leaseTimeout = TimeSpan.FromMinutes(10);

    /// <summary>A builder whose policy keeps its state where <paramref name="options"/> says (connection, prefix, failures).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    public RedisRatePolicyBuilder(RedisLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
    }

    /// <summary>Limits per tier for layers created without a limit; <paramref name="tierSelector"/> names a request's tier.</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    public RedisRatePolicyBuilder<TContext> UseTiers(Func<TContext, string?> tierSelector, PolicyTiers tiers)
    {
        ArgumentNullException.ThrowIfNull(tierSelector);
        ArgumentNullException.ThrowIfNull(tiers);
        _tierSelector = tierSelector;
        _tiers = tiers;
        return this;
    }

    /// <summary>A layer keyed by <paramref name="keySelector"/> (per IP, per user, per team, per user and tool).</summary>
    /// <param name="name">The layer's name: unique, part of its Redis keys, and named by its refusals.</param>
    /// <param name="keySelector">The request's key on this layer; it must not return null.</param>
    /// <param name="rule">The algorithm and its limit; a rule without a limit takes the tier's.</param>
    /// <param name="tierSelector">This layer's own tier selector (for example the team's tier); default the policy's.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">The name is blank, already used, "pause" or "redis" (the names refusals give the pause and an outage), or contains ':', '{' or '}' (it is part of the layer's Redis keys).</exception>
    public RedisRatePolicyBuilder<TContext> AddLayer(string name, Func<TContext, string> keySelector, PolicyRule rule, Func<TContext, string?>? tierSelector = null)
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        return Add(name, rule, keySelector, tierSelector);
    }

    /// <summary>A layer with one key for every request: a global cap (mark its rule <see cref="PolicyRule.AsServiceWide"/> for 503).</summary>
    /// <inheritdoc cref="AddLayer" path="/param[@name='name']|/param[@name='rule']|/param[@name='tierSelector']|/exception"/>
    public RedisRatePolicyBuilder<TContext> AddGlobalLayer(string name, PolicyRule rule, Func<TContext, string?>? tierSelector = null) =>
        Add(name, rule, keys: null, tierSelector);

    /// <summary>
    /// How long a concurrency slot lives on Redis without being released: a node that dies with leases open frees their
    /// slots after this, and a second (the margin for nodes' clocks a second apart). An open lease renews its slots every
    /// third of it, so a request may run longer. Default 10 minutes;
    /// from one second to 100 days (the renewal timer's period, a third of it, must stay within what a timer takes, about
    /// 49 days).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is under a second or over 100 days.</exception>
    public RedisRatePolicyBuilder<TContext> WithLeaseTimeout(TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(timeout, MinLeaseTimeout);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(timeout, MaxLeaseTimeout);
        _leaseTimeout = timeout;
        return this;
    }

    private static readonly TimeSpan MinLeaseTimeout = TimeSpan.FromSeconds(1);

    private static readonly TimeSpan MaxLeaseTimeout = TimeSpan.FromDays(100);

    /// <summary>The policy.</summary>
    /// <exception cref="ArgumentException">
    /// No layer was added; the options are invalid, ask for the hybrid mode or for <see cref="RedisFailureMode.LocalFallback"/>
    /// (a layered policy is decided exactly on Redis, and fails closed or open); a layer is soft, or a log counts tokens or money.
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException">A limit is above 2^52.</exception>
    public RedisRatePolicy<TContext> Build()
    {
        if (_layers.Count == 0)
        {
            throw new ArgumentException("A policy needs at least one layer.");
        }

        // One copy for every layer: the caller's object may change later, and a policy's tiers change only by UpdateTiers.
        PolicyTiers? tiers = _tiers?.Copy();
        if (tiers is not null)
        {
            RedisRatePolicy<TContext>.CheckTiers(tiers, _layers.Select(layer => (layer.Name, layer.Rule)), othersAllowed: true);
        }
        return new RedisRatePolicy<TContext>(_options, [.. _layers.Select(layer =>
            new Policies.RedisPolicyLayer<TContext>(layer.Name, layer.Rule, layer.Keys, layer.Tier ?? _tierSelector, tiers, _options.KeyPrefix, _leaseTimeout))]);
    }

    private RedisRatePolicyBuilder<TContext> Add(string name, PolicyRule rule, Func<TContext, string>? keys, Func<TContext, string?>? tierSelector)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(rule);

        // The name is a part of the layer's Redis keys ({prefix}:name:shape:key): with a separator or a hash tag's brace in
        // it, two layers' keys could be one key (a caller choosing its partition key would count on another layer).
        if (name.AsSpan().IndexOfAny(":{}") >= 0)
        {
            throw new ArgumentException($"A layer's name is part of its Redis keys: it may not contain ':', '{{' or '}}' ('{name}').", nameof(name));
        }

        if (_layers.Exists(layer => layer.Name == name))
        {
            throw new ArgumentException($"The policy already has a layer named '{name}'.", nameof(name));
        }

        if (name is RateEngine.Policies.RefusedPolicyLease.PauseLayer or RedisRatePolicy<TContext>.UnavailableLayer)
        {
            throw new ArgumentException($"'{name}' names the pause or an outage in refusals: a layer of that name could not be told from them.", nameof(name));
        }

        _layers.Add((name, rule, keys, tierSelector));
        return this;
    }
}
