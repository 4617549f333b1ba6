using RateEngine.Policies;

namespace RateEngine;

/// <summary>
/// Builds a <see cref="RatePolicy{TContext}"/>: an ordered set of named layers, each with a key selector, a
/// <see cref="PolicyRule"/> and the meter it counts, decided all-or-nothing for every request.
/// </summary>
/// <typeparam name="TContext">What the application knows about a request (user, IP, tool, tier, model).</typeparam>
public sealed class RatePolicyBuilder<TContext>
{
    /// <summary>The most layers a policy may have: each request holds one slot per layer.</summary>
    private const int MaxLayers = 16;

    private readonly List<(string Name, PolicyRule Rule, Func<LayerSettings<TContext>, PolicyLayer<TContext>> Create)> _layers = [];
    private TimeProvider _timeProvider = TimeProvider.System;
    private Func<TContext, string?>? _tierSelector;
    private PolicyTiers? _tiers;
    private int _maxKeysPerLayer = 1 << 20;
    private int _maxSubKeysPerKey = 64;
    private TimeSpan _idleEvictionInterval = TimeSpan.FromSeconds(64);
    private Action<ReconcileRecord>? _onReconciled;
    private Action<ThresholdCrossing>? _onThreshold;
    private Action<AbandonedLease>? _onAbandoned;

    /// <summary>The clock of every layer. Default <see cref="TimeProvider.System"/>.</summary>
    /// <exception cref="ArgumentNullException">The provider is null.</exception>
    public RatePolicyBuilder<TContext> UseTimeProvider(TimeProvider timeProvider)
    {
        _timeProvider = timeProvider ?? throw new ArgumentNullException(nameof(timeProvider));
        return this;
    }

    /// <summary>
    /// The tier of each request and the limits of each tier, for layers whose rule has no fixed limit. Replace the limits at
    /// run time with <see cref="RatePolicy{TContext}.UpdateTiers"/>.
    /// </summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    public RatePolicyBuilder<TContext> UseTiers(Func<TContext, string?> tierSelector, PolicyTiers tiers)
    {
        _tierSelector = tierSelector ?? throw new ArgumentNullException(nameof(tierSelector));
        _tiers = tiers ?? throw new ArgumentNullException(nameof(tiers));
        return this;
    }

    /// <summary>
    /// Adds a layer keyed by <paramref name="keySelector"/> (per IP, per user, per team, per (user, tool)): every key gets the
    /// rule's limit, or its tier's. Layers are decided in the order added (sliding-window logs last, since they cannot
    /// always be rolled back once others admitted after them).
    /// </summary>
    /// <remarks>
    /// Layers given the same <paramref name="keySelector"/> instance (and comparer) share one key table: a request looks its
    /// key up once for all of them, and one entry per key holds every such layer's state, evicted when all of them are
    /// idle. Keep the selector in a field and pass it to each per-user layer; two lambdas written apart are two instances.
    /// Sharing changes no decision, only the work and memory per request.
    /// </remarks>
    /// <param name="name">The layer's name, unique in the policy: refusals, usage, tiers and events name it.</param>
    /// <param name="keySelector">The request's key on this layer; it must not return null.</param>
    /// <param name="rule">What the layer enforces.</param>
    /// <param name="tierSelector">This layer's tier for a request (for example the tool's price class); default the policy's.</param>
    /// <param name="comparer">Key equality; default <see cref="EqualityComparer{T}.Default"/>.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">The name is blank, already used or "pause" (the operator's pause's name in refusals), or the policy has 16 layers already.</exception>
    public RatePolicyBuilder<TContext> AddLayer<TKey>(
        string name,
        Func<TContext, TKey> keySelector,
        PolicyRule rule,
        Func<TContext, string?>? tierSelector = null,
        IEqualityComparer<TKey>? comparer = null)
        where TKey : notnull
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        return Add(name, rule, settings => LayerFactory.Create(name, rule, keySelector, Tiered(settings, tierSelector), comparer));
    }

    /// <summary>
    /// Adds a layer keyed by a pair, a key and a sub-key under it (per user per tool, per team per model): every pair gets
    /// the rule's limit, or its tier's. The pair's state lives in the key's entry of <paramref name="keySelector"/>'s key
    /// table (shared with the other layers given that selector instance), so the layer needs no table of its own and a
    /// request looks the pair up on the cache lines its key's other layers have just read.
    /// </summary>
    /// <remarks>
    /// A key holds at most <see cref="WithMaxSubKeysPerKey"/> sub-keys at once (idle ones make room): a further one is
    /// refused with a reason naming the layer (a soft layer lets it pass untracked). For pairs with many sub-keys per key,
    /// key the layer by the pair with <see cref="AddLayer{TKey}"/> instead.
    /// </remarks>
    /// <param name="name">The layer's name, unique in the policy: refusals, usage, tiers and events name it.</param>
    /// <param name="keySelector">The request's key; it must not return null.</param>
    /// <param name="subKeySelector">The request's sub-key under its key; it must not return null.</param>
    /// <param name="rule">What the layer enforces, per (key, sub-key).</param>
    /// <param name="tierSelector">This layer's tier for a request (for example the tool's price class); default the policy's.</param>
    /// <param name="comparer">Key equality; default <see cref="EqualityComparer{T}.Default"/>.</param>
    /// <param name="subKeyComparer">Sub-key equality; default <see cref="EqualityComparer{T}.Default"/>.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">The name is blank, already used or "pause" (the operator's pause's name in refusals), or the policy has 16 layers already.</exception>
    public RatePolicyBuilder<TContext> AddNestedLayer<TKey, TSubKey>(
        string name,
        Func<TContext, TKey> keySelector,
        Func<TContext, TSubKey> subKeySelector,
        PolicyRule rule,
        Func<TContext, string?>? tierSelector = null,
        IEqualityComparer<TKey>? comparer = null,
        IEqualityComparer<TSubKey>? subKeyComparer = null)
        where TKey : notnull
        where TSubKey : notnull
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        ArgumentNullException.ThrowIfNull(subKeySelector);
        var subKeys = new SubKeySpec<TContext, TSubKey>(subKeySelector, subKeyComparer);
        return Add(name, rule, settings => LayerFactory.Create(name, rule, keySelector, Tiered(settings, tierSelector), comparer, subKeys));
    }

    /// <summary>
    /// Adds a layer with one state for the whole service (a global cost cap): usually with <see cref="PolicyRule.AsServiceWide"/>.
    /// </summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">The name is blank, already used or "pause" (the operator's pause's name in refusals), or the policy has 16 layers already.</exception>
    public RatePolicyBuilder<TContext> AddGlobalLayer(string name, PolicyRule rule, Func<TContext, string?>? tierSelector = null) =>
        Add(name, rule, settings => LayerFactory.Create<TContext, string>(name, rule, null, Tiered(settings, tierSelector), null));

    /// <summary>The most keys each layer holds at once (idle keys are evicted). Default 1,048,576.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not positive.</exception>
    public RatePolicyBuilder<TContext> WithMaxKeysPerLayer(int maxKeys)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxKeys, 1);
        _maxKeysPerLayer = maxKeys;
        return this;
    }

    /// <summary>The most sub-keys one key holds at once on a layer keyed by (key, sub-key). Default 64.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not positive.</exception>
    public RatePolicyBuilder<TContext> WithMaxSubKeysPerKey(int maxSubKeys)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSubKeys, 1);
        _maxSubKeysPerKey = maxSubKeys;
        return this;
    }

    /// <summary>How long one full idle-eviction pass over every layer takes. Default 64 seconds.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Not positive.</exception>
    public RatePolicyBuilder<TContext> WithIdleEvictionInterval(TimeSpan interval)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(interval, TimeSpan.Zero);
        _idleEvictionInterval = interval;
        return this;
    }

    /// <summary>
    /// Called for every weighted layer a reconcile settles (layer, key, estimate, actual, overrun), for cost accounting. Each
    /// listener is called on its own: one that throws does not keep the record from the others, and the reconcile, settled
    /// on every layer first, then throws the first exception.
    /// </summary>
    public RatePolicyBuilder<TContext> OnReconciled(Action<ReconcileRecord> listener)
    {
        _onReconciled += listener ?? throw new ArgumentNullException(nameof(listener));
        return this;
    }

    /// <summary>
    /// Called once per threshold, period and key when a soft layer's usage reaches a threshold. Each listener is called on
    /// its own. A listener that throws rolls the request back; if every listener threw, the threshold is left to the next
    /// crossing, and once one took it, it stays reported (a listener that threw misses it, and the one that took it is not
    /// told twice). What was reported before stands.
    /// </summary>
    public RatePolicyBuilder<TContext> OnThresholdCrossed(Action<ThresholdCrossing> listener)
    {
        _onThreshold += listener ?? throw new ArgumentNullException(nameof(listener));
        return this;
    }

    /// <summary>Called (on the finalizer thread) when a lease holding concurrency slots is collected without being disposed.</summary>
    public RatePolicyBuilder<TContext> OnLeaseAbandoned(Action<AbandonedLease> listener)
    {
        _onAbandoned += listener ?? throw new ArgumentNullException(nameof(listener));
        return this;
    }

    /// <summary>Builds the policy. The builder can go on to build others.</summary>
    /// <exception cref="InvalidOperationException">No layers; a layer without a fixed limit and no tier selector; or a tier names an unknown layer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A tier's limit is out of its layer's range.</exception>
    public RatePolicy<TContext> Build()
    {
        if (_layers.Count == 0)
        {
            throw new InvalidOperationException("A policy needs at least one layer.");
        }

        if (_tiers is not null)
        {
            PolicyTiersCheck.ThrowIfUnknownLayers(_tiers, _layers.Select(layer => (layer.Name, layer.Rule)));
        }

        var shared = Timing.PolicyClock.Of(_timeProvider);
        var clock = shared.Clock;
        var settings = new LayerSettings<TContext>(clock, shared.OriginUtc, _tierSelector, _tiers, _maxKeysPerLayer, _maxSubKeysPerKey, _onThreshold);
        PolicyLayer<TContext>[] layers = [.. _layers.Select(layer => layer.Create(settings))];
        return new RatePolicy<TContext>(layers, clock, _idleEvictionInterval, _onReconciled, _onAbandoned);
    }

    private RatePolicyBuilder<TContext> Add(string name, PolicyRule rule, Func<LayerSettings<TContext>, PolicyLayer<TContext>> create)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(rule);
        if (_layers.Exists(layer => layer.Name == name))
        {
            throw new ArgumentException($"The policy already has a layer named '{name}'.", nameof(name));
        }

        if (name == RefusedPolicyLease.PauseLayer)
        {
            throw new ArgumentException($"'{name}' names the operator's pause in refusals: a layer of that name could not be told from it.", nameof(name));
        }

        if (_layers.Count == MaxLayers)
        {
            throw new ArgumentException($"A policy has at most {MaxLayers} layers.", nameof(name));
        }

        _layers.Add((name, rule, settings =>
        {
            if (rule.Limit is null && settings.TierSelector is null)
            {
                throw new InvalidOperationException($"Layer '{name}' has no fixed limit, so it needs tiers: call UseTiers or give it a tier selector.");
            }

            return create(settings);
        }));
        return this;
    }

    private static LayerSettings<TContext> Tiered(LayerSettings<TContext> settings, Func<TContext, string?>? tierSelector) =>
        tierSelector is null ? settings : settings with { TierSelector = tierSelector, Tiers = settings.Tiers ?? new PolicyTiers() };
}
