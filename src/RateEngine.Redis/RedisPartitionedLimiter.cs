using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Threading.RateLimiting;
using RateEngine.Redis.Hybrid;
using RateEngine.Redis.Scripts;
using RateEngine.Redis.Telemetry;
using StackExchange.Redis;

namespace RateEngine.Redis;

/// <summary>
/// A partitioned limiter whose every decision is one Lua script on Redis (exact mode): the script reads the clock,
/// decides and writes in one atomic step, so the cap holds across every node that shares the server.
/// </summary>
/// <remarks>
/// <para><c>AcquireAsync</c> is the native path. <c>AttemptAcquire</c> runs the same script and blocks its thread at most
/// <see cref="RedisLimiterOptions.SyncTimeout"/>; past it, it answers by the failure mode. Neither queues: a refusal
/// comes back at once with <c>RETRY_AFTER</c>.</para>
/// <para>A call that times out or is cancelled while its script is in flight may still be admitted on the server: its
/// permits then count without a lease (stricter, never looser). A failed call opens the breaker for the cool-down, during
/// which calls answer by the failure mode without touching Redis; the task of a call given up on is observed, so its
/// exception is never left unobserved.</para>
/// </remarks>
internal sealed class RedisPartitionedLimiter<TResource, TOptions> : PartitionedRateLimiter<TResource>, IRedisLimiterHealth
    where TOptions : class
{
    private static readonly RedisLease FailOpenLease = new(true, null, "Redis is unavailable; admitted without a limit (FailOpen).");
    private static readonly RedisLease FailClosedLease = new(false, null, "Redis is unavailable; refused (FailClosed).");

    private static readonly long UnixEpochTicks = DateTimeOffset.UnixEpoch.UtcTicks;

    private readonly Func<TResource, string> _keySelector;
    private readonly Func<string, TOptions> _optionsResolver;
    private readonly Func<TOptions, RedisRule> _createRule;
    private readonly ConditionalWeakTable<TOptions, RedisRule> _rules = [];
    private readonly IDatabase _database;
    private readonly string _keyPrefix;
    private readonly TimeProvider? _clientClock;
    private readonly TimeSpan _syncTimeout;
    private readonly RedisFailureMode _failureMode;
    private readonly RedisBreaker _breaker;
    private readonly string _nonce = Guid.NewGuid().ToString("N");
    private readonly LocalReservations<LimiterKey>? _local;
    private readonly Func<int, PartitionedRateLimiter<string>>? _createFallback;
    private readonly RedisNodeRegistry? _registry;
    private readonly Lock _fallbackLock = new();
    private PartitionedRateLimiter<string>? _fallback;
    private int _fallbackNodes;
    private readonly RedisMetrics _metrics;
    private readonly Func<string, RedisPartitionedLimiter<TResource, TOptions>, LimiterKey>? _createLocalKey;
    private long _calls;
    private long _roundTrips;
    private volatile bool _disposed;

    public RedisPartitionedLimiter(
        Func<TResource, string> keySelector,
        Func<string, TOptions> optionsResolver,
        Func<TOptions, RedisRule> createRule,
        RedisLimiterOptions options,
        bool servesHybrid,
        Func<Func<string, TOptions>, FallbackShare, TimeProvider, PartitionedRateLimiter<string>>? createFallback = null)
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        ArgumentNullException.ThrowIfNull(optionsResolver);
        ArgumentNullException.ThrowIfNull(options);
        options = options.Snapshot();
        options.Validate();
        if (options.Hybrid is not null && !servesHybrid)
        {
            throw new ArgumentException(
                "The hybrid mode serves the fixed window and the sliding-window counter; this algorithm runs in exact mode only (leave RedisLimiterOptions.Hybrid null).",
                nameof(options));
        }

        _keySelector = keySelector;
        _optionsResolver = optionsResolver;
        _createRule = createRule;
        _database = options.Connection!.GetDatabase(options.Database);
        _keyPrefix = options.KeyPrefix;
        _clientClock = options.ClientClock;
        _syncTimeout = options.SyncTimeout;
        _failureMode = options.FailureMode;
        _metrics = new RedisMetrics(options.MeterFactory, options.KeyPrefix, options.Hybrid is not null);
        _breaker = RedisBreaker.Create(options, _metrics);
        if (options.FailureMode == RedisFailureMode.LocalFallback)
        {
            // Each node its share of every key's limit, in process, while Redis does not answer: configured, or 1/N of the
            // live nodes the heartbeats counted.
            ArgumentNullException.ThrowIfNull(createFallback);
            TimeProvider time = options.TimeProvider;
            if (options.LocalFallbackLiveNodes is { } live)
            {
                _createFallback = nodes => createFallback(optionsResolver, FallbackShare.OfNodes(nodes), time);
                _fallbackNodes = live.MinimumNodeCount;
                _fallback = _createFallback(_fallbackNodes);
                _registry = new RedisNodeRegistry(_database, _keyPrefix, live, time, Now, Counted);
            }
            else
            {
                _fallback = createFallback(optionsResolver, FallbackShare.Configured(options.LocalFallbackShare), time);
            }
        }

        if (options.Hybrid is { } hybrid)
        {
            _local = new LocalReservations<LimiterKey>(hybrid, options.TimeProvider, SendReservation, ReadReservation, GiveBack, () => !_breaker.IsOpen);
            _createLocalKey = CreateLocalKey;
        }
    }

    /// <summary>Script calls so far: acquires in exact mode; reservations and returns in the hybrid mode (tests, bench).</summary>
    internal long RoundTrips => Volatile.Read(ref _roundTrips);

    /// <summary>The hybrid mode's local side (tests); null in exact mode.</summary>
    internal LocalReservations<LimiterKey>? Local => _local;

    /// <summary>The live node count the local fallback's share is made from; null when the share is configured (tests).</summary>
    internal int? FallbackNodes => _registry is null ? null : Volatile.Read(ref _fallbackNodes);

    /// <summary>Failed calls so far (tests and diagnostics).</summary>
    public long Failures => _breaker.Failures;

    string IRedisLimiterHealth.KeyPrefix => _keyPrefix;

    RedisFailureMode IRedisLimiterHealth.FailureMode => _failureMode;

    bool IRedisLimiterHealth.IsDegraded => _breaker.IsDegraded;

    string IRedisLimiterHealth.LastFailure => _breaker.LastFailure;

    /// <summary>One PING on the limiter's connection, given up after the sync bound (a stopped server never answers).</summary>
    Task<TimeSpan> IRedisLimiterHealth.PingAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return RedisTasks.PingWithin(_database, _syncTimeout, cancellationToken);
    }

    /// <remarks>
    /// The health key is under the limiter's prefix (an ACL granting <c>prefix:*</c> covers it). Partitions live in their
    /// own cluster slots, so on a cluster the probe answers for the health key's shard only, as one breaker answers for all.
    /// </remarks>
    Task IRedisLimiterHealth.ProbeAsync(CancellationToken cancellationToken) =>
        RedisBreaker.ProbeAsync(_breaker, () => _breaker.Failures, failures => _breaker.CloseUnlessTrippedSince(failures), _database, $"{_keyPrefix}:health", _syncTimeout, cancellationToken);

    /// <summary>
    /// Not tracked: a partition's count lives on the server, and reading it would cost a round trip on a path that must not
    /// block. Returns null.
    /// </summary>
    public override RateLimiterStatistics? GetStatistics(TResource resource) => null;

    /// <summary>The Redis key of a partition: the partition key is the hash tag, so its keys share one cluster slot.</summary>
    internal string KeyOf(string partitionKey, RedisRule rule) => RedisRule.KeyOf(_keyPrefix, partitionKey, rule);

    /// <summary>Runs the script for one call: the native path under both acquires (and the tests' view of the decision).</summary>
    internal Task<RedisResult> Evaluate(TResource resource, int permitCount)
    {
        RedisRule rule = Resolve(resource, permitCount, out string partitionKey);
        return Evaluate(partitionKey, rule, permitCount);
    }

    /// <summary>The request's partition and rule, checked: user code runs here, before anything is sent.</summary>
    private RedisRule Resolve(TResource resource, int permitCount, out string partitionKey)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(permitCount);
        partitionKey = _keySelector(resource) ?? throw new InvalidOperationException("The key selector returned null.");
        TOptions options = _optionsResolver(partitionKey) ?? throw new InvalidOperationException($"No options were resolved for key '{partitionKey}'.");
        RedisRule rule = _rules.GetValue(options, created => _createRule(created));
        if (permitCount > rule.PermitLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(permitCount), permitCount, $"{permitCount} permits exceed the limit of {rule.PermitLimit}.");
        }

        return rule;
    }

    private Task<RedisResult> Evaluate(string partitionKey, RedisRule rule, int permitCount)
    {
        string? nonce = rule.NeedsNonce
            ? _nonce + Interlocked.Increment(ref _calls).ToString(CultureInfo.InvariantCulture)
            : null;
        Interlocked.Increment(ref _roundTrips);
        _metrics.RoundTrip();
        return _database.ScriptEvaluateAsync(rule.Script, rule.Parameters(KeyOf(partitionKey, rule), Now(), permitCount, nonce));
    }

    private long Now() => _clientClock is null ? -1 : (_clientClock.GetUtcNow().UtcTicks - UnixEpochTicks) / 10;

    /// <summary>Sends a key's reservation: the client's own task for it, and the breaker's failure count when it was sent.</summary>
    private (Task<RedisResult> Answer, long FailuresWhenSent) SendReservation(LimiterKey key, long need, long want)
    {
        Interlocked.Increment(ref _roundTrips);
        _metrics.RoundTrip();
        long failures = _breaker.Failures;
        return (_database.ScriptEvaluateAsync(key.Rule.ReserveScript!, key.Rule.ReserveParameters(key.RedisKey, Now(), need, want)), failures);
    }

    /// <summary>A reservation's answer, on whichever thread reads it first; throws the call's own error.</summary>
    private Reservation ReadReservation(Task<RedisResult> answer, long failuresWhenSent)
    {
        if (!answer.IsCompletedSuccessfully)
        {
            if (answer.Exception?.InnerException is RedisServerException script && RedisBreaker.IsScriptError(script))
            {
                _breaker.CloseUnlessTrippedSince(failuresWhenSent); // an answer all the same: not an outage
            }

            answer.GetAwaiter().GetResult();
        }

        // Redis answered: closed, whether a request waited for this reservation or it was a background refill (a busy key
        // refilled in the background may never wait again, and a breaker left open would keep the node reading as degraded),
        // unless the breaker tripped after it was sent.
        _breaker.CloseUnlessTrippedSince(failuresWhenSent);
        long[] reply = (long[])answer.Result!;
        return new Reservation(Granted: reply[0], RetryAfter: reply[1], ValidFor: reply[2], Period: reply[4]);
    }

    // Async, so that a client that throws at once (its connection disposed at shutdown) fails the task instead of throwing
    // into the idle sweep's timer or a block's replacement.
    private async Task GiveBack(LimiterKey key, long period, long returned)
    {
        Interlocked.Increment(ref _roundTrips);
        _metrics.RoundTrip();
        await _database.ScriptEvaluateAsync(key.Rule.ReturnScript!, key.Rule.ReturnParameters(key.RedisKey, period, returned)).ConfigureAwait(false);
    }

    /// <summary>
    /// A key's local state on first touch here (or after it was idle): its options are resolved now and kept with it, as
    /// the in-process partitioned limiters resolve a key's options when its state is created, so the hot path calls no
    /// user code but the key selector (a resolver that makes new options per call would otherwise cost a rule per acquire).
    /// </summary>
    private static LimiterKey CreateLocalKey(string partitionKey, RedisPartitionedLimiter<TResource, TOptions> self)
    {
        TOptions options = self._optionsResolver(partitionKey) ?? throw new InvalidOperationException($"No options were resolved for key '{partitionKey}'.");
        RedisRule rule = self._rules.GetValue(options, created => self._createRule(created));
        return new LimiterKey(partitionKey, rule, self._keyPrefix);
    }

    /// <summary>The hybrid mode's key and rule for a request, checked as <see cref="Resolve"/> checks it.</summary>
    private LimiterKey ResolveLocal(TResource resource, int permitCount)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(permitCount);
        string partitionKey = _keySelector(resource) ?? throw new InvalidOperationException("The key selector returned null.");
        LimiterKey key = _local!.KeyOf(partitionKey, _createLocalKey!, this);
        if (permitCount > key.PermitLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(permitCount), permitCount, $"{permitCount} permits exceed the limit of {key.PermitLimit}.");
        }

        return key;
    }

    /// <summary>
    /// Whether a zero-permit probe is answered by this node's own block: Redis counts a block's permits as used, so in the
    /// hybrid mode the script would refuse a probe on a key whose next request this node admits from its block.
    /// </summary>
    private bool HoldsPermitHere(string partitionKey, int permitCount) =>
        permitCount == 0 && _local?.HoldsPermit(partitionKey) == true;

    internal static RedisDecision Decision(RedisResult result)
    {
        var values = (long[])result!;
        return new RedisDecision(values[0] == 1, values[1], values[2], values[3]);
    }

    protected override RateLimitLease AttemptAcquireCore(TResource resource, int permitCount)
    {
        if (_local is not null && permitCount > 0)
        {
            return AttemptLocal(resource, permitCount);
        }

        RedisRule rule = Resolve(resource, permitCount, out string partitionKey);
        if (HoldsPermitHere(partitionKey, permitCount))
        {
            return RedisLease.Acquired;
        }

        if (!_breaker.MayCall(out long probe))
        {
            return Unavailable(partitionKey, permitCount);
        }

        long failures = _breaker.Failures;
        Task<RedisResult> task = EvaluateHoldingProbe(partitionKey, rule, permitCount, probe);
        try
        {
            if (!task.Wait(_syncTimeout))
            {
                RedisTasks.Observe(task);
                return Failed($"Redis did not answer within {_syncTimeout.TotalMilliseconds:F0} ms.", partitionKey, permitCount);
            }
        }
        catch (AggregateException error) when (error.InnerException is RedisServerException script && RedisBreaker.IsScriptError(script))
        {
            _breaker.CloseUnlessTrippedSince(failures);
            throw RedisBreaker.ScriptFailed("limiter", script);
        }
        catch (AggregateException error) when (error.InnerException is RedisException or TimeoutException)
        {
            return Failed(error.InnerException.Message, partitionKey, permitCount);
        }
        catch (AggregateException error) when (error.InnerExceptions.Count == 1)
        {
            throw Unwrapped(error, probe);
        }

        _breaker.CloseUnlessTrippedSince(failures);
        return Lease(Decision(task.Result));
    }

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(TResource resource, int permitCount, CancellationToken cancellationToken)
    {
        if (_local is null || permitCount == 0)
        {
            return AcquireExactAsync(resource, permitCount, cancellationToken);
        }

        // The hybrid mode's hot path, without an async state machine: a permit from the local block (or a cached refusal)
        // answers synchronously; only a caller that needs a reservation goes async. Errors surface in the task, as async.
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<RateLimitLease>(cancellationToken);
        }

        LimiterKey key;
        RateLimitLease? answer;
        long probe;
        try
        {
            key = ResolveLocal(resource, permitCount);
            answer = LocalAnswer(key, permitCount, out probe); // may run the fallback limiter, which may throw too
        }
        catch (Exception error)
        {
            return ValueTask.FromException<RateLimitLease>(error);
        }

        return answer is not null ? new ValueTask<RateLimitLease>(answer) : AcquireLocalAsync(key, permitCount, probe, cancellationToken);
    }

    private async ValueTask<RateLimitLease> AcquireExactAsync(TResource resource, int permitCount, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        RedisRule rule = Resolve(resource, permitCount, out string partitionKey);
        if (HoldsPermitHere(partitionKey, permitCount))
        {
            return RedisLease.Acquired;
        }

        if (!_breaker.MayCall(out long probe))
        {
            return Unavailable(partitionKey, permitCount);
        }

        long failures = _breaker.Failures;
        Task<RedisResult> task = EvaluateHoldingProbe(partitionKey, rule, permitCount, probe);
        RedisResult result;
        try
        {
            result = await task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            RedisTasks.Observe(task);
            _breaker.ReleaseProbe(probe);
            throw;
        }
        catch (RedisServerException error) when (RedisBreaker.IsScriptError(error))
        {
            _breaker.CloseUnlessTrippedSince(failures);
            throw RedisBreaker.ScriptFailed("limiter", error);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            return Failed(error.Message, partitionKey, permitCount);
        }
        catch (Exception)
        {
            _breaker.ReleaseProbe(probe); // an error of another kind (a reply of another shape): nothing closes or trips for it
            throw;
        }

        _breaker.CloseUnlessTrippedSince(failures); // a late answer to a call sent before another caller's trip closes nothing
        return Lease(Decision(result));
    }

    /// <summary>
    /// The exact mode's call; one that throws before it is sent (a connection the app disposed, a client clock that
    /// throws) gives the caller's half-open probe back first: nothing will close or trip the breaker for it.
    /// </summary>
    private Task<RedisResult> EvaluateHoldingProbe(string partitionKey, RedisRule rule, int permitCount, long probe)
    {
        try
        {
            return Evaluate(partitionKey, rule, permitCount);
        }
        catch
        {
            _breaker.ReleaseProbe(probe);
            throw;
        }
    }

    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        _breaker.Retire();
        if (_registry is not null)
        {
            RedisTasks.Observe(_registry.DisposeAsync().AsTask()); // leaves the live nodes, best effort
        }

        DisposeFallback();
        if (_local is not null)
        {
            RedisTasks.Observe(_local.DisposeAsync().AsTask()); // unused permits go back, best effort
        }
    }

    protected override async ValueTask DisposeAsyncCore()
    {
        _disposed = true;
        _breaker.Retire();
        if (_registry is not null)
        {
            await _registry.DisposeAsync().ConfigureAwait(false);
        }

        DisposeFallback();
        if (_local is not null)
        {
            await _local.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The hybrid mode once the key's block could not serve the request: a reservation, then a try at the block it made,
    /// until one serves or answers (<paramref name="probe"/> is the breaker's half-open claim the caller's try took, if any).
    /// </summary>
    private async ValueTask<RateLimitLease> AcquireLocalAsync(LimiterKey key, int permitCount, long probe, CancellationToken cancellationToken)
    {
        for (int attempt = 1; ; attempt++)
        {
            // Disposed meanwhile: every block that lands now goes straight back, so another reservation would serve nothing.
            ThrowIfLocalDisposed(probe);
            Task<LocalBlock> refill = StartRefill(ref key, permitCount, probe, out bool joined);
            try
            {
                await refill.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                RedisTasks.Observe(refill);
                _breaker.ReleaseProbe(probe);
                throw;
            }
            catch (RedisServerException error) when (RedisBreaker.IsScriptError(error))
            {
                _breaker.ReleaseProbeUnlessSent(!joined, probe);
                throw RedisBreaker.ScriptFailed("limiter", error); // the reservation closed the breaker for the answer
            }
            catch (Exception error) when (error is RedisException or TimeoutException)
            {
                return Failed(error.Message, key.PartitionKey, permitCount);
            }
            catch (Exception)
            {
                _breaker.ReleaseProbe(probe); // an error of another kind (a disposed connection): nothing closes or trips for it
                throw;
            }

            // No close here: the reservation's answer closed the breaker if nothing tripped it since it was sent (a caller
            // may have joined one sent before a trip). Every reservation is followed by a try at its block, the last one too.
            _breaker.ReleaseProbeUnlessSent(!joined, probe);
            if (LocalAnswer(key, permitCount, out probe) is { } answer)
            {
                return answer;
            }

            if (attempt == LocalAttempts)
            {
                return Contended(probe);
            }
        }
    }

    /// <summary>The hybrid mode, synchronously: as <see cref="AcquireLocalAsync"/>, waiting for a reservation at most the sync bound.</summary>
    private RateLimitLease AttemptLocal(TResource resource, int permitCount)
    {
        LimiterKey key = ResolveLocal(resource, permitCount);
        if (LocalAnswer(key, permitCount, out long probe) is { } served)
        {
            return served; // no clock read of its own: a locally served acquire reads the limiter's clock once, in its take
        }

        long started = Stopwatch.GetTimestamp(); // real time, as the waits are: one bound for the waits together

        for (int attempt = 1; ; attempt++)
        {
            ThrowIfLocalDisposed(probe); // as in AcquireLocalAsync
            TimeSpan left = _syncTimeout - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
            {
                return BoundSpent(probe); // the reservations so far were answered: no outage to report
            }

            Task<LocalBlock> refill = StartRefill(ref key, permitCount, probe, out bool joined);
            try
            {
                LocalReservations<LimiterKey>.RefillWait waited = _local!.WaitForRefill(key, refill, permitCount, left, out bool sentHere);
                joined &= !sentHere; // a queued refill it sent itself used its probe
                if (waited != LocalReservations<LimiterKey>.RefillWait.Completed)
                {
                    RedisTasks.Observe(refill);

                    // Unanswered for the whole bound: an outage. Unanswered for what earlier answered reservations left of
                    // it proves nothing (contended callers on a cold key each waited for a few), nor does a refill that was
                    // not on the wire (a background one still queued on a busy pool): no trip, which would send every key of
                    // this node to the failure mode for a cool-down while Redis is well.
                    if (attempt == 1 && waited == LocalReservations<LimiterKey>.RefillWait.Unanswered)
                    {
                        return Failed($"Redis did not answer within {_syncTimeout.TotalMilliseconds:F0} ms.", key.PartitionKey, permitCount);
                    }

                    _breaker.ReleaseProbeUnlessSent(!joined, probe);
                    return BoundSpent(long.MinValue);
                }

                refill.Wait(0); // completed: throws its error, if it failed, for the clauses below
            }
            catch (AggregateException error) when (error.InnerException is RedisServerException script && RedisBreaker.IsScriptError(script))
            {
                _breaker.ReleaseProbeUnlessSent(!joined, probe);
                throw RedisBreaker.ScriptFailed("limiter", script); // the reservation closed the breaker for the answer
            }
            catch (AggregateException error) when (error.InnerException is RedisException or TimeoutException)
            {
                return Failed(error.InnerException.Message, key.PartitionKey, permitCount);
            }
            catch (AggregateException error) when (error.InnerExceptions.Count == 1)
            {
                throw Unwrapped(error, probe); // nothing will close or trip the breaker for it
            }

            // No close here (see AcquireLocalAsync): the reservation's answer closed it, unless it tripped since.
            _breaker.ReleaseProbeUnlessSent(!joined, probe);
            if (LocalAnswer(key, permitCount, out probe) is { } answer)
            {
                return answer;
            }

            if (attempt == LocalAttempts)
            {
                return Contended(probe);
            }
        }
    }

    /// <summary>
    /// The key's reservation: this caller's, or the one in flight that it joins (<paramref name="joined"/>). A key the idle
    /// sweep forgot meanwhile is looked up again (its blocks go straight back). If the key's resolver or the clock throws,
    /// the half-open probe the caller holds goes back first: nothing was sent for it.
    /// </summary>
    private Task<LocalBlock> StartRefill(ref LimiterKey key, int permitCount, long probe, out bool joined)
    {
        try
        {
            if (key.Forgotten)
            {
                key = _local!.KeyOf(key.PartitionKey, _createLocalKey!, this);
            }

            return _local!.StartRefill(key, permitCount, out joined);
        }
        catch
        {
            _breaker.ReleaseProbe(probe);
            throw;
        }
    }

    /// <summary>
    /// The sync bound ran out across reservations Redis answered (their blocks taken by other callers of the key): refused
    /// with the reason, without a RETRY_AFTER and without tripping the breaker. The probe goes back (nothing is in flight
    /// for it).
    /// </summary>
    private RedisLease BoundSpent(long probe)
    {
        _breaker.ReleaseProbe(probe);
        return new(false, null, $"No reserved permit was free for this request within the {_syncTimeout.TotalMilliseconds:F0} ms bound (other callers on this node took them, or Redis answered late); try again, or acquire asynchronously.");
    }

    /// <summary>
    /// A wait's error of another kind than Redis's (a disposed connection, a reply of another shape), as the async path
    /// throws it rather than wrapped: the caller's half-open probe, if it holds one for nothing sent, goes back first.
    /// </summary>
    private Exception Unwrapped(AggregateException error, long probe)
    {
        _breaker.ReleaseProbe(probe);
        ExceptionDispatchInfo.Throw(error.InnerException!);
        return error; // not reached
    }

    /// <summary>Throws once the local reservations are disposed, first giving back the half-open probe the caller holds.</summary>
    private void ThrowIfLocalDisposed(long probe)
    {
        if (_local!.IsDisposed)
        {
            _breaker.ReleaseProbe(probe);
            throw new ObjectDisposedException(GetType().FullName);
        }
    }

    /// <summary>
    /// The hybrid mode's answer without waiting: a permit from the key's block, a cached refusal, or the failure mode's
    /// answer while the breaker is open; null when the caller needs a reservation.
    /// </summary>
    private RateLimitLease? LocalAnswer(LimiterKey key, int permitCount, out long probe)
    {
        probe = long.MinValue;
        if (_local!.TryTake(key, permitCount, out TimeSpan? refusedFor) is not null)
        {
            return RedisLease.Acquired;
        }

        if (refusedFor is { } retryAfter)
        {
            return Refused(retryAfter);
        }

        return _breaker.MayCall(out probe) ? null : Unavailable(key.PartitionKey, permitCount);
    }

    /// <summary>
    /// Reservations one request may wait for before it gives up as contended (each one's block taken by other callers of
    /// the key on this node before this one's try at it). Settable for tests only.
    /// </summary>
    internal int LocalAttempts { get; set; } = 32;

    private static RedisLease Refused(TimeSpan retryAfter) => new(false, retryAfter, "The limit is reached.");

    /// <summary>Gives up: the probe a last try took goes back (nothing will call Redis for it), and the refusal says why.</summary>
    private RedisLease Contended(long probe)
    {
        _breaker.ReleaseProbe(probe);
        return new(false, null, $"Concurrent callers on this node took every reserved permit {LocalAttempts} times over; try again.");
    }

    /// <summary>
    /// Sees every decision an exact-mode request's own script returned, on the caller's flow, before its lease is made
    /// (tests: the window checks read the decisions' stamps through the public acquire paths). Null in production.
    /// </summary>
    internal Action<RedisDecision>? DecisionObserver { get; set; }

    private RateLimitLease Lease(RedisDecision decision)
    {
        DecisionObserver?.Invoke(decision);
        return decision.Admitted ? RedisLease.Acquired : Refused(TimeSpan.FromTicks(decision.RetryAfterMicroseconds * 10));
    }

    private RateLimitLease Failed(string why, string partitionKey, int permitCount)
    {
        _metrics.Failure();

        // Under the fallback's lock: a new node count that passed Counted's check before this trip either replaces the
        // fallback before the outage's first answer or sees the trip and leaves it (see Counted).
        lock (_fallbackLock)
        {
            _breaker.Trip(why);
        }

        return Unavailable(partitionKey, permitCount);
    }

    /// <summary>Disposes the local fallback under its lock, so that a replacement racing the dispose is disposed too.</summary>
    private void DisposeFallback()
    {
        PartitionedRateLimiter<string>? fallback;
        lock (_fallbackLock)
        {
            fallback = _fallback;
        }

        fallback?.Dispose();
    }

    private RateLimitLease Fallback(string partitionKey, int permitCount)
    {
        try
        {
            try
            {
                return Volatile.Read(ref _fallback)!.AttemptAcquire(partitionKey, permitCount);
            }
            catch (ObjectDisposedException) when (!_disposed)
            {
                return Volatile.Read(ref _fallback)!.AttemptAcquire(partitionKey, permitCount); // replaced under us by a new share
            }
        }
        catch (ArgumentOutOfRangeException error) when (error.ParamName is nameof(permitCount) or "tokenCount")
        {
            // The count was checked against the key's limit before any call, so only this node's share of it (a smaller
            // limit: the bucket names its parameter tokenCount) is left to refuse it. No bad input, just more than this node
            // may admit alone while Redis is away: refused for the outage, not thrown with a limit the caller never set.
            // (Another parameter's exception, from the options resolver say, goes on as it is.)
            return new RedisLease(false, null, $"Redis is unavailable, and {permitCount} permits exceed this node's share of the limit (LocalFallback).");
        }
    }

    /// <summary>
    /// A heartbeat's live count: a new share gets a fresh local limiter, but only while Redis answers, so an outage runs on
    /// one share (and its counts) from its start to its end.
    /// </summary>
    private void Counted(int nodes)
    {
        if (_breaker.IsDegraded || _disposed || nodes == Volatile.Read(ref _fallbackNodes))
        {
            return;
        }

        PartitionedRateLimiter<string> replaced;
        lock (_fallbackLock)
        {
            // Again under the lock that trips take: an outage runs on one share from its start, never on a fresh limiter
            // that would admit a share again next to what the old one admitted.
            if (_breaker.IsDegraded || _disposed || nodes == _fallbackNodes)
            {
                return;
            }

            replaced = _fallback!;
            Volatile.Write(ref _fallback, _createFallback!(nodes));
            Volatile.Write(ref _fallbackNodes, nodes);
        }

        replaced.Dispose();
    }

    /// <summary>
    /// The failure mode's answer. Its reason says what happened, not why: the store's error text (its endpoint, and the
    /// key of whichever request met it, another caller's) is for the log and the health check, not for a response.
    /// </summary>
    private RateLimitLease Unavailable(string partitionKey, int permitCount) => _failureMode switch
    {
        RedisFailureMode.FailOpen => FailOpenLease,
        RedisFailureMode.LocalFallback => Fallback(partitionKey, permitCount),
        _ => FailClosedLease,
    };
}
