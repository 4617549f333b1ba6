using System.Globalization;
using System.Threading.RateLimiting;
using RateEngine.Redis.Scripts;
using StackExchange.Redis;

namespace RateEngine.Redis.Policies;

/// <summary>
/// An acquired lease of a <see cref="RedisRatePolicy{TContext}"/>: what each layer reserved and where (its window, segment or
/// period), so that a step charge, a reconcile or a dispose settles every layer in one script call.
/// </summary>
/// <remarks>
/// <para>The async settles await one script call; the sync ones block at most the policy's sync timeout. Each settle carries
/// a sequence number that the script applies once, so a settle whose outcome is unknown (Redis did not answer in time, the
/// connection dropped) is sent again, unchanged, before anything else the lease does, and counts on the lease at once: a
/// charge that threw is not to be charged again (it is kept, and lands with the lease's next call or dispose), a
/// reconcile that threw has settled the lease, and no refund or charge counts twice.</para>
/// <para>A dispose never blocks: it sends its release (and its refund, on layers that refund unreconciled estimates) in the
/// background; if Redis never takes it, a concurrency slot frees itself at the lease timeout.</para>
/// </remarks>
internal sealed class RedisPolicyLease<TContext> : PolicyLease
{
    internal const int Open = 0;
    internal const int Reconciled = 1;
    internal const int Ended = 2;

    private static readonly string[] NoMetadata = [];
    private static readonly string[] ReasonOnly = [MetadataName.ReasonPhrase.Name];

    private readonly RedisRatePolicy<TContext> _policy;
    private readonly RedisKey[] _keys;
    private readonly long[] _limits;
    private readonly long[] _reserved;
    private readonly long[] _tags;
    private readonly long[] _overrun;
    private readonly string _id;
    private readonly string? _unbacked;
    private readonly RequestCost _estimate;
    private RequestCost _consumed;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private int _state;
    private long _sequence;

    /// <summary>A settle sent whose outcome is unknown: sent again, unchanged, before the lease's next settle.</summary>
    private (RedisValue[] Values, Action Applied)? _unknown;

    public RedisPolicyLease(
        RedisRatePolicy<TContext> policy, RedisKey[] keys, long[] limits, long[] reserved, long[] tags, string id, RequestCost estimate, IReadOnlyList<LayerUsage>? usage = null)
    {
        UsageAtDecision = usage;
        _policy = policy;
        _keys = keys;
        _limits = limits;
        _reserved = reserved;
        _tags = tags;
        _overrun = new long[keys.Length];
        _id = id;
        _estimate = estimate;
    }

    /// <summary>A lease that holds nothing on Redis (admitted by <see cref="RedisFailureMode.FailOpen"/>): settling it does nothing.</summary>
    public RedisPolicyLease(RedisRatePolicy<TContext> policy, RequestCost estimate, string reason)
        : this(policy, [], [], [], [], string.Empty, estimate) => _unbacked = reason;

    public override bool IsAcquired => true;

    public override string? BlockingLayer => null;

    public override string? Reason => _unbacked;

    public override TimeSpan? RetryAfter => null;

    public override bool IsServiceWide => false;

    public override RequestCost Estimate => _estimate;

    public override RequestCost Consumed
    {
        get
        {
            lock (_overrun)
            {
                return _consumed; // two longs: read under the lock the charge writes them under
            }
        }
    }

    public override IEnumerable<string> MetadataNames => _unbacked is null ? NoMetadata : ReasonOnly;

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = metadataName == MetadataName.ReasonPhrase.Name ? _unbacked : null;
        return metadata is not null;
    }

    public override bool IsSettled => Volatile.Read(ref _state) != Open;

    public override void Charge(RequestCost step) => Wait(ChargeAsync(step).AsTask());

    public override RequestCost Reconcile(RequestCost actual) => Wait(ReconcileAsync(actual).AsTask());

    public override async ValueTask ChargeAsync(RequestCost step, CancellationToken cancellationToken = default)
    {
        ThrowIfNotExact(step, nameof(step));
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await SettleUnknownAsync().ConfigureAwait(false);
            ThrowIfNotOpen();
            RequestCost consumed = new(_consumed.Tokens + step.Tokens, _consumed.Money + step.Money);
            var amounts = new long[_keys.Length];
            for (int i = 0; i < _keys.Length; i++)
            {
                // What goes past the estimate is an overrun, charged at once; within it, the reservation already counts it.
                RedisPolicyLayer<TContext> layer = _policy[i];
                amounts[i] = Math.Max(0, layer.PastReservation(consumed, _reserved[i], _overrun[i]));
            }

            void Applied()
            {
                for (int i = 0; i < amounts.Length; i++)
                {
                    _overrun[i] += amounts[i];
                }

                lock (_overrun)
                {
                    _consumed = consumed;
                }
            }

            await SettleAsync(amounts, Applied).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    public override ValueTask<RequestCost> ReconcileAsync(RequestCost actual, CancellationToken cancellationToken = default)
    {
        ThrowIfNotExact(actual, nameof(actual));
        return SettleAtAsync(actual, cancellationToken);
    }

    /// <summary>Settles at what was consumed, read under the gate that step charges take: one charged meanwhile is in it.</summary>
    public override RequestCost Reconcile() => Wait(SettleAtAsync(given: null, CancellationToken.None).AsTask());

    /// <inheritdoc cref="Reconcile()"/>
    public override ValueTask<RequestCost> ReconcileConsumedAsync(CancellationToken cancellationToken = default) => SettleAtAsync(given: null, cancellationToken);

    /// <summary>Settles the request at <paramref name="given"/>, or (null) at what the step charges consumed.</summary>
    private async ValueTask<RequestCost> SettleAtAsync(RequestCost? given, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await SettleUnknownAsync().ConfigureAwait(false);
            ThrowIfNotOpen();
            RequestCost actual = given ?? Consumed;
            ThrowIfNotExact(actual, "actual");
            var amounts = new long[_keys.Length];
            for (int i = 0; i < _keys.Length; i++)
            {
                RedisPolicyLayer<TContext> layer = _policy[i];
                // > 0 charges, < 0 refunds: at most the reservation, which is what the acquire counted where the refund goes
                // (an overrun was spent, maybe in a later window, so it stays counted).
                amounts[i] = Math.Max(layer.PastReservation(actual, _reserved[i], _overrun[i]), -_reserved[i]);
            }

            await SettleAsync(amounts, () => _state = Reconciled).ConfigureAwait(false);
            return actual.PastEstimate(_estimate);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Undoes an admission nobody will use (its acquire was cancelled or timed out while the script ran): every layer gives
    /// back what it took, where it took it, and every slot is released.
    /// </summary>
    public async Task RollBackAsync()
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            long[] amounts = [.. _reserved.Select((reserved, i) => _policy[i].IsConcurrency ? 1 : -reserved)];
            _state = Ended;
            await SettleAsync(amounts, static () => { }).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (_gate.Wait(0))
        {
            // The usual case: nothing is settling; decide the release now, send it in the background.
            RedisTasks.Observe(EndAsync(gateHeld: true));
        }
        else
        {
            RedisTasks.Observe(EndAsync(gateHeld: false)); // a settle is under way: release once it is done
        }
    }

    /// <summary>Ends the lease: slots released, and the estimate refunded on layers that refund unreconciled estimates.</summary>
    private async Task EndAsync(bool gateHeld)
    {
        if (!gateHeld)
        {
            await _gate.WaitAsync().ConfigureAwait(false);
        }

        try
        {
            if (_state == Ended)
            {
                return;
            }

            await SettleUnknownAsync().ConfigureAwait(false);
            var amounts = new long[_keys.Length];
            for (int i = 0; i < _keys.Length; i++)
            {
                // What the steps did not consume: what they did, and an overrun past it, was spent (as in process).
                RedisPolicyLayer<TContext> layer = _policy[i];
                amounts[i] = layer.IsConcurrency ? 1 : _state == Open && layer.Rule.RefundsUnreconciled ? -layer.Unspent(_consumed, _reserved[i], _overrun[i]) : 0;
            }

            _state = Ended;
            await SettleAsync(amounts, static () => { }).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>One settle call for every layer at once, applied once by the script whatever happens to its reply.</summary>
    private async Task SettleAsync(long[] amounts, Action applied)
    {
        if (_unbacked is not null || amounts.All(amount => amount == 0))
        {
            applied();
            return;
        }

        var values = new RedisValue[2 + (_keys.Length * PolicyScripts.Stride)];
        values[1] = string.Create(CultureInfo.InvariantCulture, $"{_id}#{++_sequence}");
        long clientNow = _policy.ClientMicroseconds();
        for (int i = 0; i < _keys.Length; i++)
        {
            _policy[i].WriteArguments(values, 2 + (i * PolicyScripts.Stride), _limits[i], amounts[i], _tags[i], clientNow);
        }

        _unknown = (values, applied);
        try
        {
            await SettleUnknownAsync().ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException && _unknown?.Values == values)
        {
            // Its outcome is unknown: it stays pending and is sent again, unchanged, before anything else this lease does,
            // until Redis takes it (the script applies it once). So it counts here already: a charge that threw is not to be
            // charged again (its step would count twice), and a reconcile that threw has settled the lease.
            _unknown = (values, static () => { });
            applied();
            throw;
        }
    }

    /// <summary>Sends the settle whose outcome is unknown (again, unchanged: the script applies it once), then applies it here.</summary>
    private async Task SettleUnknownAsync()
    {
        if (_unknown is not { } unknown)
        {
            return;
        }

        try
        {
            await _policy.Settle(_keys, _id, unknown.Values).ConfigureAwait(false);
        }
        catch (RedisServerException error) when (RedisRatePolicy<TContext>.IsScriptError(error))
        {
            // A script error is a bug, not an outage: the settle did not apply, is not sent again, and trips no breaker.
            _unknown = null;
            throw;
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            _policy.Trip(error.Message);
            throw;
        }

        _unknown = null;
        _policy.Succeeded();
        unknown.Applied();
    }

    /// <summary>The sync methods: block at most the policy's sync timeout (the settle may still land: it is sent again next time).</summary>
    private T Wait<T>(Task<T> task)
    {
        Wait((Task)task);
        return task.Result;
    }

    private void Wait(Task task) => RedisTasks.WaitWithin(task, _policy.SyncTimeout);

    internal static void ThrowIfNotExact(RequestCost cost, string parameterName)
    {
        cost.ThrowIfNegative(parameterName);
        if (cost.Tokens > RedisPolicyLayer<TContext>.MaxExact || cost.Money > RedisPolicyLayer<TContext>.MaxExact)
        {
            throw new ArgumentOutOfRangeException(parameterName, cost, "A cost on a Redis policy stays below 2^53, where Lua's numbers are exact.");
        }
    }

    private void ThrowIfNotOpen() => ThrowIfNotOpen(_state);

    /// <summary>A Redis lease (exact or hybrid) is charged or reconciled only while open.</summary>
    internal static void ThrowIfNotOpen(int state)
    {
        if (state != Open)
        {
            throw new InvalidOperationException(state == Reconciled
                ? "The lease was already reconciled: a request is settled once."
                : "The lease was disposed: its estimate was settled then.");
        }
    }
}
