using System.Runtime.ExceptionServices;
using System.Threading.RateLimiting;
using RateEngine.Policies;
using RateEngine.Timing;

namespace RateEngine;

/// <summary>
/// A layered rate and budget policy: every request is checked against every layer that applies (per IP, per user, per
/// tool, concurrent streams, token budgets, cost caps by tier and team, a global cap, an operator's pause) in one
/// all-or-nothing step, and a request's estimate is reserved, then reconciled with its actual cost.
/// </summary>
/// <remarks>
/// <para><b>All-or-nothing</b>: if any layer refuses, the layers that had admitted are refunded at once, so a refused request
/// consumes nothing anywhere; a reconcile adjusts every weighted layer the request touched. The refusal names the first
/// refusing layer and carries the longest retry delay among every layer that would refuse (none when a full concurrency
/// layer is among them: nobody knows when a slot frees).</para>
/// <para><b>One clock read</b> per request for all layers, after every layer has found the request's key: user code (key
/// and tier selectors) runs before any state changes, so a selector that throws leaves every layer as it was.</para>
/// <para>Each layer keeps its state per key in a lock-free table with idle eviction, as <see cref="PartitionedLimiter"/>
/// does. The policy does not queue: a refused request is refused at once with its retry delay.</para>
/// <para>Use <see cref="AsRateLimiter"/> where a <see cref="PartitionedRateLimiter{TResource}"/> is expected (ASP.NET Core's
/// <c>GlobalLimiter</c>, <c>PartitionedRateLimiter.CreateChained</c>).</para>
/// </remarks>
/// <typeparam name="TContext">What the application knows about a request.</typeparam>
public sealed class RatePolicy<TContext> : IRatePolicy<TContext>, IAsyncDisposable
{
    private readonly PolicyLayer<TContext>[] _layers;
    private readonly PolicyLayer<TContext>[] _declared;
    private readonly Action<ReconcileRecord>?[] _reconcileListeners;
    private readonly int[] _keyLeads;

    /// <summary>Whether a layer reports thresholds once a request is admitted (most policies have none: no pass over the layers).</summary>
    private readonly bool _hasSoftLayers;
    private readonly IKeyTable[] _keyTables;
    private readonly LimiterClock _clock;
    private readonly ITimer? _sweeper;

    /// <summary>The policies a combined policy decides together (<see cref="Combine(RatePolicy{TContext}[])"/>); null for a built one.</summary>
    private readonly RatePolicy<TContext>[]? _sources;
    private readonly bool _tracksAbandoned;
    private int _nextSweep;
    private volatile RefusedPolicyLease? _pause;
    private volatile bool _disposed;

    /// <summary>Serializes <see cref="UpdateTiers"/>' swaps, so two concurrent updates never leave the layers on a mix of both.</summary>
    private readonly Lock _tiersUpdate = new();

    /// <summary>
    /// Odd while <see cref="UpdateTiers"/> publishes its layers one by one, even otherwise, and one step further each time:
    /// a request whose lookup phase saw it change looks again, so that no request is judged by one version's limit on one
    /// layer and another version's on the next (a request that neither version admits could pass between the two).
    /// </summary>
    private int _tiersVersion;

    internal RatePolicy(
        PolicyLayer<TContext>[] declared, LimiterClock clock, TimeSpan idleEvictionInterval, Action<ReconcileRecord>? onReconciled, Action<AbandonedLease>? onAbandoned)
        : this(declared, [.. declared.Select(_ => onReconciled)], clock, onAbandoned, sources: null)
    {
        int shards = Math.Max(1, _keyTables.Sum(table => table.ShardCount));
        TimeSpan period = TimeSpan.FromMilliseconds(Math.Clamp(idleEvictionInterval.TotalMilliseconds / shards, 1, 0xFFFFFFFE));
        _sweeper = ContextFreeTimer.Create(clock.Provider, static state => ((RatePolicy<TContext>)state!).SweepNext(), this, period, period);
    }

    private RatePolicy(
        PolicyLayer<TContext>[] declared, Action<ReconcileRecord>?[] reconcileListeners, LimiterClock clock, Action<AbandonedLease>? onAbandoned, RatePolicy<TContext>[]? sources)
    {
        // Logs and buckets last: they undo only an admission no other has followed, and a layer decided last is rolled back
        // only when a threshold listener throws. Among them, the keyed ones before the global ones: a global bucket's undo
        // fails whenever another request took from it meanwhile, which on a busy global key is nearly always, so a global
        // one decided before a caller's exhausted log would let that caller's refused requests drain it for everyone (a
        // combination of a service-wide policy and an endpoint's puts exactly these together).
        int[] order =
        [
            .. Enumerable.Range(0, declared.Length).Where(i => declared[i].RollsBackExactly),
            .. Enumerable.Range(0, declared.Length).Where(i => !declared[i].RollsBackExactly && declared[i].Keys is not null),
            .. Enumerable.Range(0, declared.Length).Where(i => !declared[i].RollsBackExactly && declared[i].Keys is null),
        ];
        _layers = [.. order.Select(i => declared[i])];
        _reconcileListeners = [.. order.Select(i => reconcileListeners[i])];
        _declared = declared;
        _sources = sources;
        LayerNames = [.. declared.Select(layer => layer.Name)];
        _clock = clock;
        OnAbandoned = onAbandoned;
        _tracksAbandoned = declared.Any(layer => layer.IsConcurrency);
        ReleasesOnDispose = declared.Any(layer => layer.IsConcurrency || layer.Rule.RefundsUnreconciled);

        // Layers of one key selector share a key table: the first of them in decision order looks the key up for all.
        _keyLeads = [.. _layers.Select((layer, i) => layer.Keys is null ? i : Array.FindIndex(_layers, other => ReferenceEquals(other.Keys, layer.Keys)))];
        _hasSoftLayers = _layers.Any(layer => layer.IsSoft);
        _keyTables = [.. _layers.Select(layer => layer.Keys).OfType<IKeyTable>().Distinct()];
    }

    /// <summary>The layers' names, in the order they were added.</summary>
    public IReadOnlyList<string> LayerNames { get; }

    /// <summary>Whether the operator's pause is on (<see cref="Pause"/>; for a combined policy, its own or any of its sources').</summary>
    public bool IsPaused => (_pause ?? SourcePause()) is not null;

    /// <summary>The reconcile listener of layer <paramref name="index"/> (in decision order): its own policy's.</summary>
    internal Action<ReconcileRecord>? ReconcileListener(int index) => _reconcileListeners[index];

    internal Action<AbandonedLease>? OnAbandoned { get; }

    internal LimiterClock Clock => _clock;

    /// <summary>Whether disposing a lease may give something back (a concurrency slot, or an estimate a rule refunds).</summary>
    internal bool ReleasesOnDispose { get; }

    /// <summary>Acquires one request that costs nothing on the weighted meters (request and concurrency layers count it).</summary>
    /// <inheritdoc cref="Acquire(TContext, RequestCost)"/>
    public PolicyLease Acquire(TContext context) => Acquire(context, RequestCost.None);

    /// <summary>
    /// Reserves <paramref name="estimate"/> on every weighted layer and one request on every other layer, all or nothing.
    /// </summary>
    /// <returns>An acquired lease to reconcile and dispose, or a refusal naming the layer.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The estimate is negative.</exception>
    /// <exception cref="InvalidOperationException">A key selector returned null.</exception>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    public PolicyLease Acquire(TContext context, RequestCost estimate)
    {
        estimate.ThrowIfNegative(nameof(estimate));
        return AcquireCore(context, estimate, requests: 1);
    }

    /// <summary>Always decides at once: an in-process policy needs no I/O.</summary>
    /// <inheritdoc cref="Acquire(TContext, RequestCost)" path="/exception"/>
    public bool TryAcquire(TContext context, RequestCost estimate, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out PolicyLease? lease)
    {
        lease = Acquire(context, estimate);
        return true;
    }

    /// <summary><see cref="Acquire(TContext, RequestCost)"/>, completed at once (the policy does not queue).</summary>
    /// <inheritdoc cref="Acquire(TContext, RequestCost)" path="/returns|/exception"/>
    /// <exception cref="OperationCanceledException">The token was cancelled before the decision.</exception>
    public ValueTask<PolicyLease> AcquireAsync(TContext context, RequestCost estimate, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(Acquire(context, estimate));
    }

    /// <summary><see cref="GetUsage(TContext)"/>, completed at once.</summary>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    public ValueTask<IReadOnlyList<LayerUsage>> GetUsageAsync(TContext context, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(GetUsage(context));
    }

    /// <summary><see cref="Combine(RatePolicy{TContext}[])"/> of this policy and <paramref name="others"/>.</summary>
    /// <exception cref="ArgumentException">One of the others is not an in-process <see cref="RatePolicy{TContext}"/>, or as <see cref="Combine(RatePolicy{TContext}[])"/>.</exception>
    public IRatePolicy<TContext> Combine(IReadOnlyList<IRatePolicy<TContext>> others)
    {
        ArgumentNullException.ThrowIfNull(others);
        return Combine([this, .. others.Select(other => other as RatePolicy<TContext>
            ?? throw new ArgumentException("An in-process policy combines only with in-process policies.", nameof(others)))]);
    }

    /// <summary>One layer's usage for the request's key, without consuming anything. Allocation-free.</summary>
    /// <exception cref="ArgumentException">The policy has no layer of that name.</exception>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    public LayerUsage GetUsage(TContext context, string layer)
    {
        ThrowIfDisposed(); // a combination's too once any of its policies is: their layers are no longer swept
        foreach (PolicyLayer<TContext> candidate in _layers)
        {
            if (candidate.Name == layer)
            {
                return candidate.GetUsage(context, _clock.Now());
            }
        }

        throw new ArgumentException($"The policy has no layer named '{layer}'.", nameof(layer));
    }

    /// <summary>Every layer's usage for the request's keys, in the order the layers were added.</summary>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    public IReadOnlyList<LayerUsage> GetUsage(TContext context)
    {
        ThrowIfDisposed();
        long now = _clock.Now();
        return [.. LayerNames.Select(name => Array.Find(_layers, layer => layer.Name == name)!.GetUsage(context, now))];
    }

    /// <summary>The rule of the layer named <paramref name="layer"/> (for example to describe it in response headers).</summary>
    /// <exception cref="ArgumentException">The policy has no layer of that name.</exception>
    public PolicyRule GetRule(string layer) =>
        Array.Find(_declared, candidate => candidate.Name == layer)?.Rule
        ?? throw new ArgumentException($"The policy has no layer named '{layer}'.", nameof(layer));

    /// <summary>
    /// The operator's switch: every request is refused, service-wide (503), with <paramref name="reason"/>, until <see cref="Resume"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The reason is blank.</exception>
    public void Pause(string reason)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        _pause = new RefusedPolicyLease(RefusedPolicyLease.PauseLayer, reason, retryAfter: null, serviceWide: true);
    }

    /// <summary>Lifts the pause.</summary>
    public void Resume() => _pause = null;

    /// <summary><see cref="Pause"/>, which in process completes at once.</summary>
    /// <exception cref="ArgumentException">The reason is blank.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public ValueTask PauseAsync(string reason, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Pause(reason);
        return default;
    }

    /// <summary><see cref="Resume"/>, which in process completes at once.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public ValueTask ResumeAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Resume();
        return default;
    }

    /// <summary>
    /// Replaces every tier's limits at once. Takes effect for the next decision; usage already counted is kept.
    /// </summary>
    /// <exception cref="ArgumentNullException">The tiers are null.</exception>
    /// <exception cref="ArgumentException">A tier names a layer the policy does not have, or one whose rule sets its own limit.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A limit is out of its layer's range.</exception>
    /// <exception cref="InvalidOperationException">The policy is a combination (update the policies it combines).</exception>
    public void UpdateTiers(PolicyTiers tiers)
    {
        ArgumentNullException.ThrowIfNull(tiers);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_sources is not null)
        {
            throw new InvalidOperationException("A combined policy's tiers are those of the policies it combines: update those.");
        }

        PolicyTiersCheck.ThrowIfUnknownLayers(tiers, _layers.Select(layer => (layer.Name, layer.Rule)), nameof(tiers));

        // Every layer's tiers are built and checked before any is published: a limit out of one layer's range leaves the
        // whole policy on its old tiers, as the exception says, not some layers on the new ones.
        Action[] publish = [.. _layers.Select(layer => layer.PrepareTiers(tiers))];
        lock (_tiersUpdate)
        {
            Interlocked.Increment(ref _tiersVersion);
            try
            {
                foreach (Action publishLayer in publish)
                {
                    publishLayer();
                }
            }
            finally
            {
                Interlocked.Increment(ref _tiersVersion);
            }
        }
    }

    /// <summary>
    /// The tiers' version once no update is publishing (see <see cref="_tiersVersion"/>); for a combined policy, the sum of its
    /// sources' (each only grows, so an unchanged sum is unchanged versions).
    /// </summary>
    private int StableTiersVersion()
    {
        if (_sources is null)
        {
            return StableVersionOf(this);
        }

        int sum = 0;
        foreach (RatePolicy<TContext> source in _sources)
        {
            sum = unchecked(sum + StableVersionOf(source));
        }

        return sum;
    }

    private static int StableVersionOf(RatePolicy<TContext> policy)
    {
        SpinWait spin = default;
        int version;
        while (((version = Volatile.Read(ref policy._tiersVersion)) & 1) != 0)
        {
            spin.SpinOnce(); // a publish takes a few writes under its lock
        }

        return version;
    }

    /// <summary>A copy of every tier's limits as they are now (what <see cref="UpdateTiers"/> last set, or the builder's).</summary>
    public PolicyTiers GetTiers()
    {
        for (int version = StableTiersVersion(); ; version = StableTiersVersion())
        {
            var tiers = new PolicyTiers();
            foreach (PolicyLayer<TContext> layer in _declared)
            {
                layer.CopyTiersTo(tiers);
            }

            if (StableTiersVersion() == version)
            {
                return tiers; // of one version, not a mix of two
            }
        }
    }

    /// <summary>
    /// One policy that decides every layer of <paramref name="policies"/> together: all or nothing across all of them, at one
    /// clock read, with the refusal naming the first refusing layer of any. It shares their state (what one admits counts
    /// for the other), their pauses and their listeners; it owns nothing, so disposing it leaves them running, and
    /// disposing any of them ends it. For example a service-wide policy plus an endpoint's own.
    /// </summary>
    /// <remarks>A combined policy's tiers are its policies' (<see cref="UpdateTiers"/> on it throws); its own
    /// <see cref="Pause"/> stops only the decisions made through it.</remarks>
    /// <exception cref="ArgumentNullException">The array or one of its policies is null.</exception>
    /// <exception cref="ArgumentException">No policies; policies built on different <see cref="TimeProvider"/>s; or two layers of the same name.</exception>
    /// <exception cref="ObjectDisposedException">One of the policies was disposed.</exception>
    public static RatePolicy<TContext> Combine(params RatePolicy<TContext>[] policies)
    {
        ArgumentNullException.ThrowIfNull(policies);
        if (policies.Length == 0)
        {
            throw new ArgumentException("Combine needs at least one policy.", nameof(policies));
        }

        // A combined policy's sources are built policies: combining a combination flattens it.
        List<RatePolicy<TContext>> sources = [];
        foreach (RatePolicy<TContext> policy in policies)
        {
            ArgumentNullException.ThrowIfNull(policy, nameof(policies));
            policy.ThrowIfDisposed();
            foreach (RatePolicy<TContext> source in policy._sources ?? [policy])
            {
                if (!sources.Contains(source))
                {
                    sources.Add(source);
                }
            }
        }

        LimiterClock clock = sources[0]._clock;
        if (sources.Exists(source => !ReferenceEquals(source._clock, clock)))
        {
            throw new ArgumentException("The policies were built on different TimeProviders: a combined decision reads one clock.", nameof(policies));
        }

        List<PolicyLayer<TContext>> declared = [];
        List<Action<ReconcileRecord>?> listeners = [];
        foreach (RatePolicy<TContext> source in sources)
        {
            foreach (PolicyLayer<TContext> layer in source._declared)
            {
                if (declared.Exists(other => other.Name == layer.Name))
                {
                    throw new ArgumentException($"Two of the policies have a layer named '{layer.Name}': a refusal must name one layer.", nameof(policies));
                }

                declared.Add(layer);
                listeners.Add(source._reconcileListeners[Array.IndexOf(source._layers, layer)]);
            }
        }

        Action<AbandonedLease>? onAbandoned = null;
        foreach (RatePolicy<TContext> source in sources)
        {
            onAbandoned += source.OnAbandoned;
        }

        return new RatePolicy<TContext>([.. declared], [.. listeners], clock, onAbandoned, [.. sources]);
    }

    /// <summary>
    /// This policy as a <see cref="PartitionedRateLimiter{TResource}"/>: each acquire is one policy decision for
    /// <c>permitCount</c> requests at <paramref name="estimate"/> (nothing on the weighted meters when null), and its lease
    /// is the <see cref="PolicyLease"/> (cast it to reconcile). <c>AcquireAsync</c> does not queue. Disposing the limiter
    /// disposes this policy (as ASP.NET Core disposes its limiters on shutdown).
    /// </summary>
    public PartitionedRateLimiter<TContext> AsRateLimiter(Func<TContext, RequestCost>? estimate = null) => new PolicyRateLimiter<TContext>(this, estimate);

    /// <summary>Stops idle eviction; later acquires and reconciles throw <see cref="ObjectDisposedException"/>. Leases still release their slots.</summary>
    public void Dispose()
    {
        _disposed = true;
        _sweeper?.Dispose();
    }

    /// <inheritdoc cref="Dispose"/>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return default;
    }

    /// <summary>True once this policy, or one of the policies it combines, was disposed: its leases can no longer settle.</summary>
    internal bool IsEnded => _disposed || (_sources is not null && Array.Exists(_sources, static source => source._disposed));

    internal void ThrowIfDisposed()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_sources is not null)
        {
            foreach (RatePolicy<TContext> source in _sources)
            {
                ObjectDisposedException.ThrowIf(source._disposed, source);
            }
        }
    }

    /// <summary>A combined policy's pause: the first of its policies that is paused.</summary>
    private RefusedPolicyLease? SourcePause()
    {
        if (_sources is null)
        {
            return null;
        }

        foreach (RatePolicy<TContext> source in _sources)
        {
            if (source._pause is { } pause)
            {
                return pause;
            }
        }

        return null;
    }

    internal PolicyLayer<TContext> this[int index] => _layers[index];

    internal int LayerCount => _layers.Length;

    /// <summary>Key tables: one per distinct key selector and comparer (tests).</summary>
    internal int KeyTableCount => _keyTables.Length;

    /// <summary>The key tables, in decision order of their first layer (tests).</summary>
    internal IReadOnlyList<IKeyTable> KeyTables => _keyTables;

    internal PolicyLease AcquireCore(TContext context, RequestCost estimate, long requests)
    {
        ThrowIfDisposed();
        if ((_pause ?? SourcePause()) is { } pause)
        {
            return pause;
        }

        // The holds are the lease's own array from the start: a stack buffer would cost zeroing and a copy on every success.
        // It comes from the thread's spares and goes back when the lease ends, or here when nothing is admitted. An exception
        // leaves it to the collector.
        PolicyLayer<TContext>[] layers = _layers;
        LayerHold[] holds = LayerHoldPool.Rent(layers.Length);

        while (true)
        {
            // Phase 1: keys, entries and tiers. User code runs here, before anything changes. Looked at again if the tiers
            // changed meanwhile: every layer's tier must be of one version (finding a key again finds the same entry).
            int version;
            for (int pass = 0; ; pass++)
            {
                version = StableTiersVersion();
                if (pass > 0)
                {
                    Array.Clear(holds); // nothing of the other version's pass stays (a tier it found, an entry for it)
                }

                RefusedPolicyLease? refusal = LookUp(context, estimate, requests, holds);
                if (StableTiersVersion() == version)
                {
                    if (refusal is not null)
                    {
                        LayerHoldPool.Return(holds);
                        return refusal;
                    }

                    break;
                }
            }

            // Phase 2: one clock read, then every layer reserves; the first refusal rolls back the layers before it. User
            // code runs here only after an eviction race (the key selector, to find the key's live entry) or, once every
            // layer has reserved, for a soft layer's threshold listener: if it throws, every reservation this request made is
            // rolled back before the exception goes on.
            long now = _clock.Now();
            int reserving = 0;
            try
            {
                for (; reserving < layers.Length; reserving++)
                {
                    PolicyLayer<TContext> layer = layers[reserving];
                    if (!layer.TryReserve(context, ref holds[reserving], now, AmountOn(layer, estimate, requests), out long retryAfter))
                    {
                        if (TryRollBack(holds, reserving - 1, now) is { } failed)
                        {
                            ExceptionDispatchInfo.Throw(failed); // every layer was tried: the catch below finds nothing more to give back
                        }

                        RefusedPolicyLease refused = Refusal(holds, reserving, now, retryAfter, estimate, requests);
                        LayerHoldPool.Return(holds);
                        return refused;
                    }
                }

                // The reservations took effect on the tiers of `version`. An update published since (a thread stalled before
                // its reservations) may have put lower caps in force: then everything goes back, and the request is decided
                // again on them (a bucket's or a log's take may stay counted: rolled back late, as after a listener that
                // throws). One update that left every limit this request was decided on in force, or raised it, changes
                // nothing: each reservation was judged on its old tier or its new one. Soft thresholds are judged only
                // against the limit in force.
                int published = StableTiersVersion();
                if (published != version
                    && (published != version + 2 || !DecidedOnTheLimitsInForce(holds) || StableTiersVersion() != published))
                {
                    if (TryRollBack(holds, layers.Length - 1, now) is { } failed)
                    {
                        ExceptionDispatchInfo.Throw(failed);
                    }

                    Array.Clear(holds);
                    continue;
                }

                for (int i = 0; _hasSoftLayers && i < layers.Length; i++)
                {
                    layers[i].Admitted(context, ref holds[i]);
                }
            }
            catch
            {
                _ = TryRollBack(holds, Math.Min(reserving, layers.Length - 1), now); // the exception that got here goes on, not a refund's
                throw;
            }

            break;
        }

        if (requests == 0)
        {
            LayerHoldPool.Return(holds);
            return AcquiredPolicyLease<TContext>.Probe;
        }

        return _tracksAbandoned
            ? new TrackedPolicyLease<TContext>(this, context, holds, estimate)
            : new AcquiredPolicyLease<TContext>(this, context, holds, estimate);
    }

    /// <summary>Whether every layer's hold was reserved on the limit now in force for its tier, or a higher one where it refuses.</summary>
    private bool DecidedOnTheLimitsInForce(LayerHold[] holds)
    {
        for (int i = 0; i < holds.Length; i++)
        {
            if (!_layers[i].DecidedOnTheLimitInForce(ref holds[i]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Phase 1 of a decision: each layer's key, entry and tier; the refusal of a layer that can never admit the request.</summary>
    private RefusedPolicyLease? LookUp(TContext context, RequestCost estimate, long requests, LayerHold[] holds)
    {
        PolicyLayer<TContext>[] layers = _layers;
        int[] keyLeads = _keyLeads;
        for (int i = 0; i < layers.Length; i++)
        {
            PolicyLayer<TContext> layer = layers[i];
            if (keyLeads[i] != i)
            {
                holds[i].Key = holds[keyLeads[i]].Key;
            }

            if (layer.Find(context, AmountOn(layer, estimate, requests), ref holds[i], out bool permanent) is { } refusal)
            {
                return new RefusedPolicyLease(layer.Name, refusal, retryAfter: null, layer.Rule.IsServiceWide, permanent);
            }
        }

        return null;
    }

    /// <summary>
    /// Refunds the reservations of layers 0..<paramref name="last"/>: the concurrency slots first, which need no clock, then
    /// the others in reverse, each whatever the others did. A calendar budget's refund reads the clock, and a provider that
    /// throws there must not keep the layers after it (a slot above all, which no lease would ever free) from theirs: the
    /// refund that threw keeps what it held (stricter, never looser), and its exception is returned once all were tried.
    /// </summary>
    private Exception? TryRollBack(LayerHold[] holds, int last, long now)
    {
        Exception? first = null;
        for (int pass = 0; pass < 2; pass++)
        {
            for (int j = last; j >= 0; j--)
            {
                if (_layers[j].IsConcurrency != (pass == 0))
                {
                    continue;
                }

                try
                {
                    _layers[j].Refund(ref holds[j], holds[j].Reserved, now);
                }
                catch (Exception error)
                {
                    first ??= error;
                }
            }
        }

        return first;
    }

    /// <summary>What a request puts on a layer: its requests, or its estimate on the layer's meter.</summary>
    internal static long AmountOn(PolicyLayer<TContext> layer, RequestCost cost, long requests) =>
        layer.Meter == PolicyMeter.Requests ? requests : requests == 0 ? 0 : cost.On(layer.Meter);

    private RefusedPolicyLease Refusal(LayerHold[] holds, int refused, long now, long retryAfter, RequestCost estimate, long requests)
    {
        PolicyLayer<TContext> first = _layers[refused];
        if (first.NoRoomReason(holds[refused]) is { } noRoom)
        {
            return new RefusedPolicyLease(first.Name, noRoom, retryAfter: null, first.Rule.IsServiceWide); // as phase 1 says it
        }

        // The longest delay among every layer that would refuse: the ones after the first refusal are checked read-only. A
        // full concurrency layer among them has no delay to promise (a slot frees when some lease ends), and a shorter one
        // from another layer would be short: then there is no RETRY_AFTER, only the others' longest as a lower bound.
        bool slotFull = first.IsConcurrency;
        long known = slotFull ? 0 : retryAfter;
        bool serviceWide = first.Rule.IsServiceWide;
        for (int i = refused + 1; i < _layers.Length; i++)
        {
            PolicyLayer<TContext> layer = _layers[i];
            long after = layer.RetryAfter(ref holds[i], now, AmountOn(layer, estimate, requests));
            if (after != 0)
            {
                slotFull |= after == PolicyLayer<TContext>.NoPromise;
                known = after == PolicyLayer<TContext>.NoPromise ? known : Math.Max(known, after);
                serviceWide |= layer.Rule.IsServiceWide;
            }
        }

        TimeSpan? longest = known > 0 ? _clock.ToRetryAfter(known) : null;
        return new RefusedPolicyLease(first.Name, first.Reason, slotFull ? null : longest, serviceWide) { AtLeast = slotFull ? longest : null };
    }

    private void SweepNext()
    {
        if (_disposed)
        {
            return;
        }

        // Round robin over every key table's shards: one shard per tick, so no sweep ever stops the world.
        IKeyTable[] tables = _keyTables;
        int total = tables.Sum(table => table.ShardCount);
        if (total == 0)
        {
            return;
        }

        int next = (int)((uint)Interlocked.Increment(ref _nextSweep) % (uint)total);
        foreach (IKeyTable table in tables)
        {
            if (next < table.ShardCount)
            {
                try
                {
                    table.Sweep(next);
                }
#pragma warning disable CA1031 // a timer's thread: an exception would end the process
                catch (Exception)
#pragma warning restore CA1031
                {
                    // A sweep that threw (a clock that throws) leaves its shard to the next round; no key was left marked.
                }

                return;
            }

            next -= table.ShardCount;
        }
    }

    /// <summary>Sweeps every shard of every key table once (tests, through the fake clock).</summary>
    internal void SweepAll()
    {
        foreach (IKeyTable table in _keyTables)
        {
            for (int shard = 0; shard < table.ShardCount; shard++)
            {
                table.Sweep(shard);
            }
        }
    }
}
