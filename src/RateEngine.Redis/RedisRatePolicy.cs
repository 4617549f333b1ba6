using System.Diagnostics;
using System.Globalization;
using System.Runtime.ExceptionServices;
using RateEngine.Policies;
using RateEngine.Redis.Hybrid;
using RateEngine.Redis.Policies;
using RateEngine.Redis.Scripts;
using RateEngine.Redis.Telemetry;
using RateEngine.Timing;
using StackExchange.Redis;

namespace RateEngine.Redis;

/// <summary>
/// A layered policy whose state lives on Redis: each request is decided on every layer (IP, user, tool, tokens, daily cents,
/// a global cap) by one script call, which takes from every layer or from none, so the all-or-nothing rule holds across
/// every node. A reconcile (refunds and overruns on every layer) is one call too.
/// </summary>
/// <remarks>
/// <para>The layers are those of <see cref="RatePolicy{TContext}"/> (any of the four algorithms, calendar budgets, concurrency
/// limits, tiers), with the same lease: reserve an estimate, charge steps, reconcile the actual, dispose. Decisions use the
/// server's <c>TIME</c> (or <see cref="RedisLimiterOptions.ClientClock"/>), one clock for every node; calendar periods are
/// computed by the client in the rule's time zone and placed on the server's clock by the script.</para>
/// <para>Every key of a policy carries the hash tag <c>{KeyPrefix}</c>, so on a Redis Cluster a policy lives in one slot (one
/// master): one script can then touch every layer a request needs. Give policies of separate tenants separate prefixes to
/// spread them over the masters.</para>
/// <para>A concurrency slot is a lease id with an expiry (<see cref="RedisRatePolicyBuilder{TContext}.WithLeaseTimeout"/>): a
/// lease disposed frees it at once, an open one renews it every third of the timeout, and one never disposed (its node
/// died) frees it at the expiry.</para>
/// <para>While Redis does not answer, a request is refused with a service-wide reason (<see cref="RedisFailureMode.FailClosed"/>)
/// or admitted holding nothing (<see cref="RedisFailureMode.FailOpen"/>); the breaker stops calls for the cool-down.</para>
/// <para><b>Hybrid mode</b> (<see cref="RedisLimiterOptions.Hybrid"/> set): the fixed-window, counter and calendar layers are
/// served from blocks that each node reserves per layer and key, as the hybrid limiters do, so a request that every such
/// layer can serve locally costs no call; the log, bucket and concurrency layers are still decided by one script call per
/// request (a concurrency cap is a handful of slots held for a whole stream: a node holding spare slots would keep them
/// from the others). A refund goes back into the key's block, an overrun is taken from it, and what no block covers is
/// counted on Redis by the key's next reservation, started at once. A pause reaches the other nodes at their next
/// reservation or within <see cref="RedisHybridOptions.PauseCheckInterval"/>; a paused node reads the switch on every
/// request, so a resume takes effect at once. Every guarantee holds across the nodes for
/// the times permits are used; the under-admission bound is the limiters' (N × MaxBlock requests per key and period, less
/// near the cap).</para>
/// </remarks>
/// <typeparam name="TContext">What the application knows about a request.</typeparam>
public sealed partial class RedisRatePolicy<TContext> : IRatePolicy<TContext>, IRedisLimiterHealth
{
    private static readonly long UnixEpochTicks = DateTimeOffset.UnixEpoch.UtcTicks;

    private readonly RedisPolicyLayer<TContext>[] _layers;
    private readonly Lock _tiersUpdate = new();
    private readonly TiersVersion _tiersVersion = new();
    private readonly RedisLimiterOptions _options;
    private readonly RedisKey _pauseKey;
    private readonly bool _combined;
    private readonly IDatabase _database;
    private readonly TimeProvider? _clientClock;
    private readonly TimeProvider _time;

    /// <summary>The clock blocks are timed on (this node's monotonic one, whatever the decisions' clock is).</summary>
    private readonly TimeProvider _blockClock;
    private readonly TimeSpan _syncTimeout;
    private readonly RedisFailureMode _failureMode;
    private readonly TimeSpan _cooldown;
    private readonly RedisBreaker _breaker;

    /// <summary>Whether <see cref="_breaker"/> is this policy's own (a combination shares the one of the policy it extends).</summary>
    private readonly bool _ownsBreaker;

    /// <summary>A combination's: the breakers of the policies it joined other than its own (see <see cref="Trip"/>).</summary>
    private RedisBreaker[] _joinedBreakers = [];

    /// <summary>A hybrid policy's exact part: the policy it is part of, which trips and closes for it.</summary>
    private readonly RedisRatePolicy<TContext>? _partOf;
    private readonly RedisMetrics _metrics;
    private readonly string _nonce = Guid.NewGuid().ToString("N");
    private readonly PauseState _pause;
    private readonly bool _hybrid;
    private readonly RedisPolicyLayer<TContext>[] _blockLayers;
    private readonly RedisRatePolicy<TContext>? _remote;
    private readonly ITimer? _pauseCheck;
    private long _leases;
    private long _roundTrips;
    private volatile bool _disposed;

    /// <param name="options">Where the state lives.</param>
    /// <param name="layers">The layers, in decision order.</param>
    /// <param name="combining">The policy whose breaker, metrics and pause switch this one shares (a combination, or a hybrid policy's exact part).</param>
    /// <param name="exactPart">This is the part of a hybrid policy that decides its log, bucket and concurrency layers per request.</param>
    internal RedisRatePolicy(RedisLimiterOptions options, RedisPolicyLayer<TContext>[] layers, RedisRatePolicy<TContext>? combining = null, bool exactPart = false)
    {
        bool combined = combining is not null;
        options = options.Snapshot();
        options.Validate();
        if (layers.Select(layer => layer.Name).Distinct(StringComparer.Ordinal).Count() != layers.Length)
        {
            throw new ArgumentException("Two layers of the policy share a name.", nameof(layers));
        }

        if (options.FailureMode == RedisFailureMode.LocalFallback)
        {
            throw new ArgumentException("A layered policy fails closed or open, not to a local share (its layers are decided together on Redis).", nameof(options));
        }

        _layers = layers;
        if (combining is null)
        {
            foreach (RedisPolicyLayer<TContext> layer in layers)
            {
                layer.TiersVersion = _tiersVersion; // a combination's layers, and a hybrid policy's exact part's, keep their policy's
            }
        }

        _options = options;
        _combined = combined;
        _pauseKey = $"{{{options.KeyPrefix}}}:paused";
        LayerNames = [.. layers.Select(layer => layer.Name)];
        _database = options.Connection!.GetDatabase(options.Database);
        _clientClock = options.ClientClock;
        _time = options.ClientClock ?? options.TimeProvider;
        _blockClock = options.TimeProvider;
        _syncTimeout = options.SyncTimeout;
        _failureMode = options.FailureMode;
        _cooldown = options.FailureCooldown;
        // A combination shares its policies' breaker and metrics: the health check of a registered policy sees the
        // failures of the combinations that serve its traffic.
        _metrics = combining?._metrics ?? new RedisMetrics(options.MeterFactory, options.KeyPrefix, hybrid: options.Hybrid is not null);
        _breaker = combining?._breaker ?? RedisBreaker.Create(options, _metrics);
        _ownsBreaker = combining is null;
        _partOf = exactPart ? combining : null;
        _pause = combining?._pause ?? new PauseState();
        _hybrid = options.Hybrid is not null && !exactPart;
        _blockLayers = _hybrid ? [.. layers.Where(layer => layer.IsBlockServed)] : [];
        if (!_hybrid)
        {
            return;
        }

        if (!combined)
        {
            foreach (RedisPolicyLayer<TContext> layer in _blockLayers)
            {
                layer.Blocks = new LocalReservations<LayerKey>(
                    options.Hybrid!,
                    options.TimeProvider,
                    ticket => Reserve(layer, ticket),
                    (key, period, returned) => GiveBackToRedis(layer, key, period, returned),
                    () => !_breaker.IsOpen,
                    returns => GiveBackToRedis(layer, returns),
                    prefetch: false, // a request's low blocks are refilled together (PrefetchLow)
                    passDebtOn: key => PassDebtOn(layer, key));
            }

            _pauseCheck = ContextFreeTimer.Create(
                options.TimeProvider,
                static state => RedisTasks.Observe(((RedisRatePolicy<TContext>)state!).CheckPauseAsync()),
                this,
                options.Hybrid!.PauseCheckInterval,
                options.Hybrid.PauseCheckInterval);
        }

        RedisPolicyLayer<TContext>[] perRequest = [.. layers.Where(layer => !layer.IsBlockServed)];
        _remote = perRequest.Length == 0 ? null : new RedisRatePolicy<TContext>(options, perRequest, combining: this, exactPart: true);
    }

    /// <summary>The layers' names, in the order they were added (the scripts decide them in this order).</summary>
    public IReadOnlyList<string> LayerNames { get; }

    /// <summary>Script calls so far (tests, bench).</summary>
    internal long RoundTrips => Volatile.Read(ref _roundTrips) + (_remote?.RoundTrips ?? 0);

    internal RedisPolicyLayer<TContext> this[int index] => _layers[index];

    internal TimeSpan SyncTimeout => _syncTimeout;

    /// <summary>Reserves <paramref name="estimate"/> on every weighted layer and one request on every other, all or nothing, in one script call.</summary>
    /// <returns>An acquired lease to reconcile and dispose, or a refusal naming the first refusing layer.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The estimate is negative.</exception>
    /// <exception cref="InvalidOperationException">A key selector returned null.</exception>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled (the script may still have counted the request: stricter, never looser).</exception>
    public ValueTask<PolicyLease> AcquireAsync(TContext context, RequestCost estimate, CancellationToken cancellationToken = default) =>
        _hybrid ? AcquireHybridAsync(context, estimate, cancellationToken) : AcquireExactAsync(context, estimate, cancellationToken);

    private async ValueTask<PolicyLease> AcquireExactAsync(TContext context, RequestCost estimate, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        (Call? call, Task<RedisResult>? task, PolicyLease? answered) = Start(context, estimate);
        if (answered is not null)
        {
            return answered;
        }

        try
        {
            return Decide(call!, estimate, await task!.WaitAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            RollBackIfAdmitted(call!, task!);
            _breaker.ReleaseProbe(call!.Probe);
            throw;
        }
        catch (RedisServerException error) when (RedisBreaker.IsScriptError(error))
        {
            throw ScriptFailed(error, call!.FailuresWhenSent);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            ReleaseSlotsOfUnknownAcquire(call!);
            return Failed(error.Message, estimate);
        }
        catch (Exception)
        {
            _breaker.ReleaseProbe(call!.Probe); // an error of another kind (a disposed connection): nothing closes or trips for it
            throw;
        }
    }

    /// <summary>
    /// <see cref="AcquireAsync"/> for a caller that cannot await: blocks its thread at most
    /// <see cref="RedisLimiterOptions.SyncTimeout"/>, then answers by the failure mode.
    /// </summary>
    /// <inheritdoc cref="AcquireAsync" path="/returns|/exception"/>
    public PolicyLease Acquire(TContext context, RequestCost estimate)
    {
        if (_hybrid)
        {
            return AcquireHybrid(context, estimate);
        }

        (Call? call, Task<RedisResult>? task, PolicyLease? answered) = Start(context, estimate);
        if (answered is not null)
        {
            return answered;
        }

        try
        {
            if (!task!.Wait(_syncTimeout))
            {
                RollBackIfAdmitted(call!, task);
                return Failed($"Redis did not answer within {_syncTimeout.TotalMilliseconds:F0} ms.", estimate);
            }
        }
        catch (AggregateException error) when (error.InnerException is RedisServerException script && RedisBreaker.IsScriptError(script))
        {
            throw ScriptFailed(script, call!.FailuresWhenSent);
        }
        catch (AggregateException error) when (error.InnerException is RedisException or TimeoutException)
        {
            // The client gave up (its own timeout, a dropped connection), not the server: the script may still run.
            ReleaseSlotsOfUnknownAcquire(call!);
            return Failed(error.InnerException.Message, estimate);
        }
        catch (AggregateException error) when (error.InnerExceptions.Count == 1)
        {
            // As the async path: an error of another kind is thrown as itself, after the probe goes back.
            _breaker.ReleaseProbe(call!.Probe);
            ExceptionDispatchInfo.Throw(error.InnerException!);
        }

        return Decide(call!, estimate, task.Result);
    }

    /// <summary>Every layer's usage for the request's keys (one script call that writes nothing), in the order the layers were added.</summary>
    /// <exception cref="InvalidOperationException">A key selector returned null, a layer has no limit for the request's tier, or the breaker is open (Redis failed within the cool-down, or another request's call is probing whether it is back).</exception>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    /// <exception cref="RedisException">Redis did not answer.</exception>
    public async ValueTask<IReadOnlyList<LayerUsage>> GetUsageAsync(TContext context, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        await ReservationsSettled(context).ConfigureAwait(false);
        var keys = new RedisKey[_layers.Length];
        var limits = new long[_layers.Length];
        var values = new RedisValue[2 + (_layers.Length * PolicyScripts.Stride)];
        long clientNow = ClientMicroseconds();
        values[0] = _clientClock is null ? -1 : clientNow;
        values[1] = string.Empty;
        for (int i = 0; i < _layers.Length; i++)
        {
            keys[i] = _layers[i].KeyOf(context);
            limits[i] = _layers[i].LimitOf(context, out string? refusal) ?? throw new InvalidOperationException(refusal);
            _layers[i].WriteArguments(values, 2 + (i * PolicyScripts.Stride), limits[i], amount: 0, tag: 0, clientNow);
        }

        if (!_breaker.MayCall(out long probe))
        {
            throw new InvalidOperationException($"Redis is unavailable ({_breaker.LastFailure}): usage cannot be read until it answers again.");
        }

        long[] result;
        long failures = FailureMark;
        try
        {
            Task<RedisResult> usage = Eval(PolicyScripts.Usage, keys, values);
            try
            {
                result = (long[])(await usage.WaitAsync(cancellationToken).ConfigureAwait(false))!;
            }
            catch (OperationCanceledException)
            {
                RedisTasks.Observe(usage);
                _breaker.ReleaseProbe(probe);
                throw;
            }
        }
        catch (RedisServerException error) when (RedisBreaker.IsScriptError(error))
        {
            throw ScriptFailed(error, failures);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            Trip(error.Message);
            throw;
        }
        catch (Exception error) when (error is not OperationCanceledException)
        {
            _breaker.ReleaseProbe(probe); // an error of another kind (a disposed connection): nothing closes or trips for it
            throw;
        }

        CloseUnlessTrippedSince(failures);
        return [.. _layers.Select((layer, i) => new LayerUsage(
            layer.Name, limits[i], Math.Max(0, result[1 + (2 * i)] - UnusedHere(layer, context)), TimeSpan.FromTicks(result[2 + (2 * i)] * 10)))];
    }

    /// <summary>
    /// Decides without waiting where it can: in exact mode never (every decision is a script call: false, use
    /// <see cref="AcquireAsync"/> or the bounded <see cref="Acquire"/>); in hybrid mode when every layer is served from
    /// blocks and they can answer (true, with an acquired lease or a refusal), otherwise false.
    /// </summary>
    public bool TryAcquire(TContext context, RequestCost estimate, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out PolicyLease? lease)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_hybrid)
        {
            return TryAcquireHybrid(context, estimate, out lease);
        }

        lease = null;
        return false;
    }

    /// <summary>Whether the pause was on as this node last heard (the switch itself lives on Redis).</summary>
    public bool IsPaused => _pause.Reason is not null;

    /// <summary>
    /// Pauses every node that shares this policy's <see cref="RedisLimiterOptions.KeyPrefix"/>: the switch is a Redis key
    /// that every acquire script reads, so the whole fleet refuses (service-wide) from its next decision on.
    /// </summary>
    /// <exception cref="ArgumentException">The reason is blank.</exception>
    /// <exception cref="RedisException">Redis did not take the switch.</exception>
    /// <exception cref="TimeoutException">Redis did not answer within the sync timeout.</exception>
    public void Pause(string reason)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        ObjectDisposedException.ThrowIf(_disposed, this);
        RedisTasks.WaitWithin(_database.StringSetAsync(_pauseKey, reason), _syncTimeout);
        _pause.Observe(_pause.Ticket(), reason);
    }

    /// <summary>Ends the pause for every node of the prefix.</summary>
    /// <exception cref="RedisException">Redis did not take the switch.</exception>
    /// <exception cref="TimeoutException">Redis did not answer within the sync timeout.</exception>
    public void Resume()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        RedisTasks.WaitWithin(_database.KeyDeleteAsync(_pauseKey), _syncTimeout);
        _pause.Observe(_pause.Ticket(), null);
    }

    /// <summary><see cref="Pause"/> without blocking: awaits Redis's answer (the client's own timeout bounds it).</summary>
    /// <exception cref="ArgumentException">The reason is blank.</exception>
    /// <exception cref="RedisException">Redis did not take the switch.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first (the switch may still be written).</exception>
    public async ValueTask PauseAsync(string reason, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        ObjectDisposedException.ThrowIf(_disposed, this);
        cancellationToken.ThrowIfCancellationRequested(); // cancelled already: nothing is written
        await WriteSwitch(_database.StringSetAsync(_pauseKey, reason), cancellationToken).ConfigureAwait(false);
        _pause.Observe(_pause.Ticket(), reason); // as Pause: ordered after every read sent before the write's answer
    }

    /// <summary><see cref="Resume"/> without blocking.</summary>
    /// <exception cref="RedisException">Redis did not take the switch.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled first (the switch may still be written).</exception>
    public async ValueTask ResumeAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        cancellationToken.ThrowIfCancellationRequested();
        await WriteSwitch(_database.KeyDeleteAsync(_pauseKey), cancellationToken).ConfigureAwait(false);
        _pause.Observe(_pause.Ticket(), null);
    }

    /// <summary>Awaits a write of the switch; one given up on (cancelled) is still observed.</summary>
    private static async Task WriteSwitch(Task write, CancellationToken cancellationToken)
    {
        try
        {
            await write.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            RedisTasks.Observe(write);
            throw;
        }
    }

    /// <inheritdoc/>
    public PolicyRule GetRule(string layer) =>
        Array.Find(_layers, candidate => candidate.Name == layer)?.Rule ?? throw new ArgumentException($"The policy has no layer named '{layer}'.", nameof(layer));

    /// <summary>Every tier's limit of the layers that take theirs from tiers (a copy).</summary>
    public PolicyTiers GetTiers()
    {
        var copy = new PolicyTiers();
        foreach (RedisPolicyLayer<TContext> layer in _layers)
        {
            if (layer.Rule.Limit is null && layer.Tiers is { } tiers)
            {
                foreach (KeyValuePair<string, IReadOnlyDictionary<string, long>> tier in tiers)
                {
                    if (tier.Value.TryGetValue(layer.Name, out long limit))
                    {
                        copy[tier.Key][layer.Name] = limit;
                    }
                }
            }
        }

        return copy;
    }

    /// <summary>
    /// Checks that every tier limit names a layer of the policy that takes its limit from tiers (a rule without one), within
    /// what the scripts count exactly: a limit that would be ignored is a mistake to report, not to keep.
    /// </summary>
    /// <param name="tiers">The tiers.</param>
    /// <param name="layers">The policy's layers.</param>
    /// <param name="othersAllowed">Whether a tier may name layers the policy lacks (a builder's tiers may be shared with
    /// policies of other layers, such as an in-process one with soft layers).</param>
    internal static void CheckTiers(PolicyTiers tiers, IEnumerable<(string Name, PolicyRule Rule)> layers, bool othersAllowed = false)
    {
        foreach ((string tier, string layer, long limit, PolicyRule? rule) in PolicyTiersCheck.Limits(tiers, layers))
        {
            if (rule is null)
            {
                if (othersAllowed)
                {
                    continue;
                }

                throw new ArgumentException($"Tier '{tier}' names layer '{layer}', which the policy lacks.", nameof(tiers));
            }

            if (rule.Limit is { } fixedLimit)
            {
                throw new ArgumentException($"Tier '{tier}' names layer '{layer}', whose rule sets its own limit ({fixedLimit}): tiers apply to layers built without one.", nameof(tiers));
            }

            if (limit is < 1 or > RedisPolicyLayer<TContext>.MaxAmount)
            {
                throw new ArgumentOutOfRangeException(nameof(tiers), limit, $"Tier '{tier}', layer '{layer}': a limit is between 1 and 2^52.");
            }
        }
    }

    /// <summary>Replaces the tiers from the next decision on; usage already counted on Redis stays.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="tiers"/> is null.</exception>
    /// <exception cref="ArgumentException">A tier names a layer the policy lacks, or one whose rule sets its own limit.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A limit is below 1 or above 2^52.</exception>
    /// <exception cref="InvalidOperationException">The policy is a combination (update the policies it combines).</exception>
    public void UpdateTiers(PolicyTiers tiers)
    {
        ArgumentNullException.ThrowIfNull(tiers);
        if (_combined)
        {
            throw new InvalidOperationException("A combined policy's tiers are its policies': update those.");
        }

        // A copy, checked and then published to every layer under one lock: the caller's object may change later, and two
        // concurrent updates must leave the layers on one of them, not a mix.
        tiers = tiers.Copy();
        CheckTiers(tiers, _layers.Select(layer => (layer.Name, layer.Rule)));

        lock (_tiersUpdate)
        {
            _tiersVersion.Step();
            try
            {
                foreach (RedisPolicyLayer<TContext> layer in _layers)
                {
                    layer.Tiers = tiers;
                }
            }
            finally
            {
                _tiersVersion.Step();
            }
        }
    }

    /// <summary>
    /// One policy that decides this policy's layers and the others' in one script, all or nothing. The others must be Redis
    /// policies on the same connection and <see cref="RedisLimiterOptions.KeyPrefix"/> (one hash tag: one cluster slot), and
    /// decide as this one does: the same mode, database, clocks (<see cref="RedisLimiterOptions.ClientClock"/> and
    /// <see cref="RedisLimiterOptions.TimeProvider"/>) and <see cref="RedisLimiterOptions.FailureMode"/>. The combined policy decides with this one's options (its
    /// <see cref="RedisLimiterOptions.SyncTimeout"/> too), so a layer of another database or clock would be counted in two
    /// places, and one that fails closed would fail open.
    /// </summary>
    /// <exception cref="ArgumentException">A policy is not a Redis policy that decides as this one does, or two layers share a name.</exception>
    public IRatePolicy<TContext> Combine(IReadOnlyList<IRatePolicy<TContext>> others)
    {
        ArgumentNullException.ThrowIfNull(others);
        var policies = others.Select(other => other is RedisRatePolicy<TContext> redis && DecidesAsThis(redis)
            ? redis
            : throw new ArgumentException(
                "A Redis policy combines only with Redis policies of the same connection, key prefix (one script reaches one slot), "
                + "mode, database, clocks (ClientClock and TimeProvider) and failure mode.",
                nameof(others)));
        RedisRatePolicy<TContext>[] joined = [.. policies];
        return new RedisRatePolicy<TContext>(_options, [.. _layers, .. joined.SelectMany(policy => policy._layers)], combining: this)
        {
            // Every breaker whose policy's layers this one decides, through combinations too: (a + b) + c trips and closes b's.
            _joinedBreakers = [.. _joinedBreakers.Concat(joined.SelectMany(policy => policy._joinedBreakers.Prepend(policy._breaker)))
                .Distinct().Where(breaker => !ReferenceEquals(breaker, _breaker))],
        };
    }

    private bool DecidesAsThis(RedisRatePolicy<TContext> other) =>
        ReferenceEquals(other._options.Connection, _options.Connection)
        && other._options.KeyPrefix == _options.KeyPrefix
        && other._hybrid == _hybrid
        && other._database.Database == _database.Database
        && ReferenceEquals(other._options.ClientClock, _options.ClientClock)
        && ReferenceEquals(other._options.TimeProvider, _options.TimeProvider) // a hybrid combination times every block on the first's
        && other._options.FailureMode == _options.FailureMode;

    /// <summary>
    /// Stops new acquires; leases already given out can still be reconciled and disposed. In hybrid mode the unused permits
    /// of this node's blocks go back to Redis, in the background.
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_ownsBreaker)
        {
            _breaker.Retire();
        }

        _remote?.Dispose();
        if (_pauseCheck is not null)
        {
            _pauseCheck.Dispose();
            foreach (RedisPolicyLayer<TContext> layer in _blockLayers)
            {
                RedisTasks.Observe(layer.Blocks!.DisposeAsync().AsTask());
            }
        }
    }

    string IRedisLimiterHealth.KeyPrefix => _options.KeyPrefix;

    RedisFailureMode IRedisLimiterHealth.FailureMode => _failureMode;

    bool IRedisLimiterHealth.IsDegraded => _breaker.IsDegraded;

    string IRedisLimiterHealth.LastFailure => _breaker.LastFailure;

    long IRedisLimiterHealth.Failures => _breaker.Failures;

    Task<TimeSpan> IRedisLimiterHealth.PingAsync(CancellationToken cancellationToken)
    {
        return RedisTasks.PingWithin(_database, _syncTimeout, cancellationToken);
    }

    /// <remarks>The health key shares the policy keys' hash tag, so it reaches the shard the scripts reach.</remarks>
    Task IRedisLimiterHealth.ProbeAsync(CancellationToken cancellationToken) =>
        RedisBreaker.ProbeAsync(_breaker, () => FailureMark, CloseUnlessTrippedSince, _database, $"{{{_options.KeyPrefix}}}:health", _syncTimeout, cancellationToken);

    /// <summary>
    /// Runs the settle script for a lease (its refunds, overruns and released slots) with the lease's settle marker, which
    /// makes a settle sent twice count once; on the client's clock if set.
    /// </summary>
    internal Task<RedisResult> Settle(RedisKey[] keys, string leaseId, RedisValue[] values)
    {
        values[0] = _clientClock is null ? -1 : ClientMicroseconds();
        return Eval(PolicyScripts.Settle, [.. keys, $"{{{_options.KeyPrefix}}}:settle:{leaseId}"], values);
    }

    internal long ClientMicroseconds() => (_time.GetUtcNow().UtcTicks - UnixEpochTicks) / 10;

    /// <summary>A timestamp of the policy's clock, for how long a lease's settle has been pending.</summary>
    internal long Timestamp() => _time.GetTimestamp();

    internal TimeSpan ElapsedSince(long timestamp) => _time.GetElapsedTime(timestamp);

    internal Task Delay(TimeSpan wait) => Task.Delay(wait, _time);

    /// <summary>Disposed: the node is going away, and its open leases stop renewing their slots (they expire at the timeout).</summary>
    internal bool IsDisposed => _disposed;

    /// <summary>A timer on the policy's clock, made without the caller's execution context.</summary>
    internal ITimer CreateTimer(TimerCallback callback, object state, TimeSpan every) =>
        ContextFreeTimer.Create(_time, callback, state, every, every);

    /// <summary>
    /// The failures so far of every breaker an answer closes: this policy's and, for a combination, those of the policies it
    /// joined (one server for all of them: a failure of any is news about it). A call reads it when sent; its answer closes
    /// the breakers only if none failed since (<see cref="CloseUnlessTrippedSince"/>).
    /// </summary>
    internal long FailureMark
    {
        get
        {
            if (_partOf is not null)
            {
                return _partOf.FailureMark;
            }

            long sum = _breaker.Failures;
            foreach (RedisBreaker joined in _joinedBreakers)
            {
                sum += joined.Failures;
            }

            return sum;
        }
    }

    /// <summary>A settle was answered: closes the breaker unless it tripped since (<paramref name="mark"/>), or never (null).</summary>
    internal void Succeeded(long? mark)
    {
        if (mark is { } failuresWhenSent)
        {
            CloseUnlessTrippedSince(failuresWhenSent);
        }
    }

    /// <summary>
    /// Closes the breaker for an answer to a call sent at <paramref name="failuresWhenSent"/> (<see cref="FailureMark"/>), and
    /// a combination's joined ones with it, unless one of them failed since. Each is closed against the count read here, so a
    /// trip that lands meanwhile keeps its breaker open.
    /// </summary>
    internal void CloseUnlessTrippedSince(long failuresWhenSent)
    {
        if (_partOf is not null)
        {
            _partOf.CloseUnlessTrippedSince(failuresWhenSent);
            return;
        }

        RedisBreaker[] joined = _joinedBreakers;
        Span<long> counts = joined.Length <= 8 ? stackalloc long[joined.Length] : new long[joined.Length];
        long own = _breaker.Failures;
        long sum = own;
        for (int i = 0; i < joined.Length; i++)
        {
            counts[i] = joined[i].Failures;
            sum += counts[i];
        }

        if (sum != failuresWhenSent || !_breaker.CloseUnlessTrippedSince(own))
        {
            return;
        }

        for (int i = 0; i < joined.Length; i++)
        {
            joined[i].CloseUnlessTrippedSince(counts[i]);
        }
    }

    internal void Trip(string why)
    {
        if (_partOf is not null)
        {
            _partOf.Trip(why);
            return;
        }

        _metrics.Failure();
        _breaker.Trip(why);

        // A combination decides the layers of the policies it joined, whose blocks ask their own breakers (prefetches,
        // idle returns, dispose): they are tripped with it, and closed with it.
        foreach (RedisBreaker joined in _joinedBreakers)
        {
            joined.Trip(why);
        }
    }

    /// <summary>
    /// Phase 1, on the client: every layer's key and limit (user code runs here, before anything is sent), or the refusal of
    /// a layer that refuses the request outright (no limit for its tier, a cost above a cap).
    /// </summary>
    private (Call? Call, PolicyLease? Refusal) Prepare(TContext context, RequestCost estimate)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        estimate.ThrowIfNegative(nameof(estimate));
        var keys = new RedisKey[_layers.Length + 1];
        keys[_layers.Length] = _pauseKey;
        var limits = new long[_layers.Length];
        var amounts = new long[_layers.Length];
        for (bool decided = false; !decided;)
        {
            // Every limit of one tiers version (see TiersVersion): read again if an update ran meanwhile.
            long version = StableTiersVersion(_layers);
            PolicyLease? never = null;
            for (int i = 0; i < _layers.Length && never is null; i++)
            {
                RedisPolicyLayer<TContext> layer = _layers[i];
                keys[i] = layer.KeyOf(context);
                amounts[i] = layer.AmountOf(estimate);
                limits[i] = layer.LimitFor(context, amounts[i], out never) ?? 0;
            }

            decided = CurrentTiersVersion(_layers) == version;
            if (decided && never is not null)
            {
                return (null, never);
            }
        }

        string lease = _nonce + Interlocked.Increment(ref _leases).ToString(CultureInfo.InvariantCulture);
        var values = new RedisValue[2 + (_layers.Length * PolicyScripts.Stride)];
        long clientNow = ClientMicroseconds();
        values[0] = _clientClock is null ? -1 : clientNow;
        values[1] = lease;
        for (int i = 0; i < _layers.Length; i++)
        {
            _layers[i].WriteArguments(values, 2 + (i * PolicyScripts.Stride), limits[i], amounts[i], tag: 0, clientNow);
        }

        return (new Call(keys, values, limits, amounts, lease), null);
    }

    /// <summary>The sum of the layers' tiers versions once no update is under way (versions only grow: a change shows).</summary>
    internal static long StableTiersVersion(RedisPolicyLayer<TContext>[] layers)
    {
        long sum = 0;
        foreach (RedisPolicyLayer<TContext> layer in layers)
        {
            sum += layer.TiersVersion.Stable();
        }

        return sum;
    }

    /// <summary>The sum of the layers' tiers versions now: equal to a stable sum read before only if no update ran since.</summary>
    internal static long CurrentTiersVersion(RedisPolicyLayer<TContext>[] layers)
    {
        long sum = 0;
        foreach (RedisPolicyLayer<TContext> layer in layers)
        {
            sum += layer.TiersVersion.Current;
        }

        return sum;
    }

    /// <summary>
    /// An acquire given up on (cancelled, or past the sync bound) may still be admitted by the script: if it was, nobody
    /// holds its lease, so undo it (its estimate refunded, its slots released) rather than let it count until it expires.
    /// </summary>
    private void RollBackIfAdmitted(Call call, Task<RedisResult> task) =>
        RedisTasks.Observe(task.ContinueWith(
            async done =>
            {
                if (done.IsCompletedSuccessfully && Decide(call, RequestCost.None, done.Result) is RedisPolicyLease<TContext> orphan)
                {
                    await orphan.RollBackAsync().ConfigureAwait(false);
                }
                else if (done.Exception?.InnerException is RedisException or TimeoutException)
                {
                    ReleaseSlotsOfUnknownAcquire(call);
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.None,
            TaskScheduler.Default).Unwrap());

    /// <summary>
    /// After an acquire whose outcome is unknown (Redis did not answer in time: its script may still have run), frees the
    /// concurrency slots it may hold, one release of each slot layer's member under the acquire's lease id, harmless if the
    /// acquire never ran (sent after it on the same connection, it runs after it). What it may have counted elsewhere stays
    /// counted (stricter). One attempt, sent at once: a slow Redis takes it after the acquire; a Redis that is down has lost
    /// or keeps the slot until the lease timeout, and a retry per failed acquire would meet it as a burst when it returns.
    /// </summary>
    private void ReleaseSlotsOfUnknownAcquire(Call call)
    {
        if (_layers.Any(layer => layer.IsConcurrency))
        {
            RedisTasks.Observe(ReleaseSlotsAsync(call));
        }
    }

    private async Task ReleaseSlotsAsync(Call call)
    {
        var values = new RedisValue[2 + (_layers.Length * PolicyScripts.Stride)];
        values[1] = $"{call.Lease}#1";
        long clientNow = ClientMicroseconds();
        for (int i = 0; i < _layers.Length; i++)
        {
            _layers[i].WriteArguments(values, 2 + (i * PolicyScripts.Stride), call.Limits[i], _layers[i].IsConcurrency ? 1 : 0, tag: 0, clientNow);
        }

        try
        {
            await Settle(call.Keys[..^1], call.Lease, values).ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            // Redis is away: the slot, if the acquire took one, frees at the lease timeout.
        }
    }

    /// <summary>The exception for a script that failed on Redis, once the breaker is closed for its answer (sent at <paramref name="failuresWhenSent"/>).</summary>
    private InvalidOperationException ScriptFailed(RedisServerException error, long failuresWhenSent)
    {
        CloseUnlessTrippedSince(failuresWhenSent);
        return RedisBreaker.ScriptFailed("policy", error);
    }

    /// <summary>Both acquires' start: phase 1, then the breaker, then the script; an answer when no call is sent.</summary>
    private (Call? Call, Task<RedisResult>? Sent, PolicyLease? Answered) Start(TContext context, RequestCost estimate)
    {
        (Call? call, PolicyLease? refusal) = Prepare(context, estimate);
        if (call is null)
        {
            return (null, null, refusal);
        }

        return _breaker.MayCall(out long probe)
            ? StartCall(call with { PauseTicket = _pause.Ticket(), FailuresWhenSent = FailureMark, Probe = probe })
            : (null, null, Unavailable(estimate));

        (Call? Call, Task<RedisResult>? Sent, PolicyLease? Answered) StartCall(Call sent)
        {
            try
            {
                return (sent, Eval(PolicyScripts.Acquire, sent.Keys, sent.Values), null);
            }
            catch
            {
                _breaker.ReleaseProbe(sent.Probe); // not sent (the app disposed its connection): nothing will close or trip for it
                throw;
            }
        }
    }

    /// <summary>One script call; <paramref name="onSent"/> sees the client's own task for it as soon as it is sent.</summary>
    private Task<RedisResult> Eval(string script, RedisKey[] keys, RedisValue[] values, Action<Task<RedisResult>>? onSent = null)
    {
        Interlocked.Increment(ref _roundTrips);
        _metrics.RoundTrip();
        Task<RedisResult> call = _database.ScriptEvaluateAsync(script, keys, values);
        Trace(call, Stopwatch.GetTimestamp());
        onSent?.Invoke(call);
        return AnswersReadLate is { } late ? ReadLate(call, late) : call;

        // As a starved pool runs the continuations: Redis answered, the code waiting for it goes on later.
        static async Task<RedisResult> ReadLate(Task<RedisResult> call, Func<Task> late)
        {
            await ((Task)call).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            await late().ConfigureAwait(false);
            return await call.ConfigureAwait(false);
        }
    }

    /// <summary>Tests: awaited after each script call's answer, before the code that waits for it reads it (a starved pool).</summary>
    internal Func<Task>? AnswersReadLate { get; set; }

    private PolicyLease Decide(Call call, RequestCost estimate, RedisResult result)
    {
        // A late answer (a call given up on, decided only to roll it back) to a call sent before a trip closes nothing.
        CloseUnlessTrippedSince(call.FailuresWhenSent);
        var answer = (RedisResult[])result!;
        int n = _layers.Length;
        if ((long)answer[0] == 1)
        {
            _pause.Observe(call.PauseTicket, null);
            return new RedisPolicyLease<TContext>(
                this, call.Keys[..^1], call.Limits, call.Amounts, [.. answer.Skip(4 + (2 * n)).Select(tag => (long)tag)], call.Lease, estimate, Usage(answer, call.Limits));
        }

        long first = (long)answer[1];
        if (first == 0)
        {
            string reason = (string?)answer[4] ?? "paused";
            _pause.Observe(call.PauseTicket, reason);
            return PausedBy(reason);
        }

        long[] values = [.. answer.Select(value => (long)value)];
        if (first < 0)
        {
            RedisPolicyLayer<TContext> skewed = _layers[(int)-first - 1];
            return new RefusedPolicyLease(
                skewed.Name, $"The calendar period of layer '{skewed.Name}' could not be placed on Redis's clock: this node's clock is a period away from the server's.", null, skewed.Rule.IsServiceWide);
        }

        RedisPolicyLayer<TContext> blocking = _layers[(int)first - 1];
        RedisPolicyLayer<TContext>[] refusing = [.. values.Skip(4 + (2 * n)).Select(index => _layers[(int)index - 1])];
        bool serviceWide = refusing.Any(layer => layer.Rule.IsServiceWide);

        // A full concurrency layer among the refusing ones has no delay to promise (a slot frees when some lease ends): the
        // other layers' longest would be short, so there is none, only that longest as a lower bound, as in process.
        TimeSpan? longest = values[2] > 0 ? TimeSpan.FromTicks(values[2] * 10) : null;
        bool slotFull = refusing.Any(layer => layer.Rule.IsConcurrency);
        return new RefusedPolicyLease(blocking.Name, blocking.Reason, slotFull ? null : longest, serviceWide)
        {
            AtLeast = slotFull ? longest : null,
            UsageAtDecision = Usage(answer, call.Limits),
        };
    }

    /// <summary>Each layer's usage as the acquire script left it: what the response headers show, without another call.</summary>
    private LayerUsage[] Usage(RedisResult[] answer, long[] limits) =>
        [.. _layers.Select((layer, i) => new LayerUsage(layer.Name, limits[i], (long)answer[4 + (2 * i)], TimeSpan.FromTicks((long)answer[5 + (2 * i)] * 10)))];

    private PolicyLease Failed(string why, RequestCost estimate)
    {
        Trip(why);
        return Unavailable(estimate);
    }

    /// <summary>
    /// The failure mode's answer. Its reason says what happened, not why: the store's error text (its endpoint, and the
    /// key of whichever request met it, another caller's) is for the log and the health check, not for a response.
    /// </summary>
    private PolicyLease Unavailable(RequestCost estimate) => _failureMode == RedisFailureMode.FailOpen
        ? new RedisPolicyLease<TContext>(this, estimate, "Redis is unavailable; admitted by FailOpen.")
        : new RefusedPolicyLease(UnavailableLayer, "Redis is unavailable; refused by FailClosed.", _cooldown, serviceWide: true);

    /// <summary>The operator's pause: a service-wide refusal with their reason.</summary>
    private static RefusedPolicyLease PausedBy(string reason) => new(RefusedPolicyLease.PauseLayer, reason, null, serviceWide: true);

    /// <summary>The blocking layer of a refusal while Redis is away (FailClosed): a name no layer may take.</summary>
    internal const string UnavailableLayer = "redis";

    /// <summary>One request's script call: its keys and values, and what the lease keeps of them.</summary>
    /// <summary>One script call of the exact mode; <see cref="PauseTicket"/> orders its view of the pause switch among other reads.</summary>
    private sealed record Call(RedisKey[] Keys, RedisValue[] Values, long[] Limits, long[] Amounts, string Lease)
    {
        public long PauseTicket { get; init; }

        /// <summary>The breaker's failures when the call was sent: its answer closes the breaker only if none came since.</summary>
        public long FailuresWhenSent { get; init; }

        /// <summary>The breaker's claim when this call is its half-open probe (long.MinValue otherwise): released if it is cancelled.</summary>
        public long Probe { get; init; } = long.MinValue;
    }
}
