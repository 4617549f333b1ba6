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
/// a sequence number that the script applies once. Settles whose outcome is unknown (Redis did not answer in time, the
/// connection dropped) wait in order and are sent again, unchanged, before anything else the lease sends, and each counts
/// on the lease at once: a charge that threw is not to be charged again (it is kept, and lands with the lease's next call
/// or dispose; later charges queue behind it, so none is lost while Redis is away), a reconcile that threw has settled
/// the lease, and no refund or charge counts twice.</para>
/// <para>The script remembers a lease's last sequence number for <see cref="PolicyScripts.SettleMemoryMilliseconds"/>
/// (a marker per lease, so it must not live as long as a day's budget does). A settle still unconfirmed after
/// <see cref="ReplayBound"/> is sent again without its refunds: past the marker's life it could apply twice, and a charge
/// or a slot's release applied twice is stricter, never looser, while a refund applied twice would free permits twice.</para>
/// <para>While it is open, a lease with concurrency slots renews them every third of the lease timeout, so a stream longer
/// than the timeout keeps its slot; the timer holds the lease weakly, so a lease that is never disposed (a caller's bug)
/// stops renewing once it is collected, and its slot frees at the timeout (and a second of margin for nodes' clocks).</para>
/// <para>A dispose never blocks: it sends its release (and its refund, on layers that refund unreconciled estimates) in the
/// background, again and again while Redis is away, for up to <see cref="ReplayBound"/>; a concurrency slot whose release
/// never lands frees itself at the lease timeout (and its second of margin).</para>
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

    /// <summary>Settles sent whose outcome is unknown, oldest first: sent again before anything else the lease sends.</summary>
    private readonly Queue<PendingSettle> _pending = new();

    /// <summary>Renews the lease's concurrency slots while it is open (null without any).</summary>
    private readonly ITimer? _renewal;

    /// <summary>How long an unconfirmed settle is sent again with its refunds (a minute inside the marker's life).</summary>
    internal static readonly TimeSpan ReplayBound = TimeSpan.FromMilliseconds(PolicyScripts.SettleMemoryMilliseconds) - TimeSpan.FromMinutes(1);

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

        TimeSpan? slotLife = null;
        for (int i = 0; i < keys.Length; i++)
        {
            if (policy[i].IsConcurrency && (slotLife is null || policy[i].LeaseTimeout < slotLife))
            {
                slotLife = policy[i].LeaseTimeout;
            }
        }

        if (slotLife is { } life)
        {
            // Every third of the timeout: a renewal that waits for a settle under way (a chunk's round trip) still lands
            // long before the slot it renews expires.
            var renewal = new SlotRenewal(new WeakReference<RedisPolicyLease<TContext>>(this));
            renewal.Timer = policy.CreateTimer(static state => ((SlotRenewal)state!).Tick(), renewal, life / 3);
            _renewal = renewal.Timer;
        }
    }

    private async Task RenewSlotsAsync()
    {
        await _gate.WaitAsync().ConfigureAwait(false); // after a settle under way, which is bounded: a skipped turn could lose the slot
        try
        {
            if (_state == Ended || _policy.IsDisposed)
            {
                _renewal?.Dispose(); // ended, or the node is going away: its slots expire at the timeout
                return;
            }

            await SettleAsync([.. _keys.Select((_, i) => _policy[i].IsConcurrency ? -1L : 0L)], static () => { }).ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            // Redis is away: the next tick renews, and the slot frees at the timeout if none can.
        }
        finally
        {
            _gate.Release();
        }
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
            ThrowIfNotOpen();
            RequestCost actual = given ?? Consumed;
            ThrowIfNotExact(actual, "actual");
            await SettleAsync(ReconcileAmounts(actual), () => _state = Reconciled).ConfigureAwait(false);
            return actual.PastEstimate(_estimate);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Set for the rollback of an admission nobody holds: its settle's answer closes no breaker.</summary>
    private bool _rollback;

    /// <summary>
    /// Undoes an admission nobody will use (its acquire was cancelled or timed out while the script ran): every layer gives
    /// back what it took, where it took it, and every slot is released.
    /// </summary>
    public async Task RollBackAsync()
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            // Sent because a caller gave up on a slow Redis (the trip's cause): its answer must not end the cool-down.
            _rollback = true;
            long[] amounts = [.. _reserved.Select((reserved, i) => _policy[i].IsConcurrency ? 1 : -reserved)];
            _state = Ended;
            _renewal?.Dispose();
            await SettleFinallyAsync(amounts).ConfigureAwait(false);
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

            var amounts = new long[_keys.Length];
            for (int i = 0; i < _keys.Length; i++)
            {
                // What the steps did not consume: what they did, and an overrun past it, was spent (as in process).
                RedisPolicyLayer<TContext> layer = _policy[i];
                amounts[i] = layer.IsConcurrency ? 1 : _state == Open && layer.Rule.RefundsUnreconciled ? -layer.Unspent(_consumed, _reserved[i], _overrun[i]) : 0;
            }

            _state = Ended;
            _renewal?.Dispose();
            await SettleFinallyAsync(amounts).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// The lease's last settle (a release, a rollback): if Redis does not take it now, nothing the lease does later will
    /// send it, so it is sent again in the background while its refunds may still be replayed.
    /// </summary>
    private async Task SettleFinallyAsync(long[] amounts)
    {
        try
        {
            await SettleAsync(amounts, static () => { }).ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException && _pending.Count > 0)
        {
            RedisTasks.Observe(FlushLaterAsync());
            throw;
        }
    }

    /// <summary>Sends the pending settles again, backing off from 1 s, until Redis takes them or they are past replaying.</summary>
    private async Task FlushLaterAsync()
    {
        TimeSpan wait = TimeSpan.FromSeconds(1);
        for (long started = _policy.Timestamp(); _policy.ElapsedSince(started) < ReplayBound; wait = TimeSpan.FromTicks(Math.Min(wait.Ticks * 2, TimeSpan.FromSeconds(30).Ticks)))
        {
            await _policy.Delay(wait).ConfigureAwait(false);
            await _gate.WaitAsync().ConfigureAwait(false);
            try
            {
                await FlushAsync().ConfigureAwait(false);
                return;
            }
            catch (Exception error) when (error is RedisException or TimeoutException)
            {
                // Still away: try again later.
            }
            finally
            {
                _gate.Release();
            }
        }
    }

    /// <summary>One settle call for every layer at once, applied once by the script whatever happens to its reply.</summary>
    private async Task SettleAsync(long[] amounts, Action applied)
    {
        if (_unbacked is not null)
        {
            applied();
            return;
        }

        // Nothing to send for all zeros, but the settles still pending go now: a lease's last call may be one of those.
        PendingSettle? settle = null;
        if (amounts.Any(amount => amount != 0))
        {
            settle = new PendingSettle(SettleValues(++_sequence, amounts), _policy.Timestamp());
            _pending.Enqueue(settle);
        }

        try
        {
            await FlushAsync().ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException && (settle is null || _pending.Contains(settle)))
        {
            // Its outcome is unknown (or it waits behind one that is): it stays pending and is sent again, unchanged, before
            // anything else this lease sends, until Redis takes it (the script applies it once). So it counts here already:
            // a charge that threw is not to be charged again (its step would count twice), and a reconcile that threw has
            // settled the lease.
            applied();
            throw;
        }

        applied();
    }

    /// <summary>Sends the pending settles in order (again, unchanged: the script applies each once), dropping each that lands.</summary>
    private async Task FlushAsync()
    {
        while (_pending.TryPeek(out PendingSettle? head))
        {
            RedisValue[]? values = ReplayableValues(head);
            if (values is not null)
            {
                long? mark = _rollback ? null : _policy.FailureMark;
                try
                {
                    await _policy.Settle(_keys, _id, values).ConfigureAwait(false);
                }
                catch (RedisServerException error) when (RedisBreaker.IsScriptError(error))
                {
                    // A script error is a bug, not an outage: the settle did not apply, is not sent again, and trips no breaker;
                    // Redis answered, so it closes it as any answer does.
                    _pending.Dequeue();
                    _policy.Succeeded(mark);
                    throw;
                }
                catch (Exception error) when (error is RedisException or TimeoutException)
                {
                    _policy.Trip(error.Message);
                    throw;
                }

                _policy.Succeeded(mark);
            }

            _pending.Dequeue();
        }
    }

    /// <summary>
    /// What to send for a pending settle: its values, or, once it is older than <see cref="ReplayBound"/> (the script may
    /// have forgotten that it applied it), the same without its refunds; null when nothing is left to send.
    /// </summary>
    private RedisValue[]? ReplayableValues(PendingSettle settle)
    {
        if (_policy.ElapsedSince(settle.FirstSent) < ReplayBound)
        {
            return settle.Values;
        }

        RedisValue[] values = [.. settle.Values];
        bool any = false;
        for (int i = 0; i < _keys.Length; i++)
        {
            int at = 2 + (i * PolicyScripts.Stride) + 2;
            if ((long)values[at] < 0)
            {
                values[at] = 0;
            }

            any |= (long)values[at] != 0;
        }

        return any ? values : null;
    }

    /// <summary>
    /// For tests: reconciles at <paramref name="actual"/> as if Redis applied it and its reply was lost (it stays pending,
    /// first sent now), which no test can make a real server do on cue.
    /// </summary>
    internal async Task ReconcileWithReplyLostAsync(RequestCost actual)
    {
        await ReconcileAsync(actual).ConfigureAwait(false);
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            // The same settle again, as the lease would send it: what the script applied is answered as a replay.
            _pending.Enqueue(new PendingSettle(SettleValues(_sequence, ReconcileAmounts(actual)), _policy.Timestamp()));
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// A reconcile at <paramref name="actual"/>, per layer: &gt; 0 charges, &lt; 0 refunds, at most the reservation, which is
    /// what the acquire counted where the refund goes (an overrun was spent, maybe in a later window, so it stays counted).
    /// </summary>
    private long[] ReconcileAmounts(RequestCost actual) =>
        [.. _keys.Select((_, i) => Math.Max(_policy[i].PastReservation(actual, _reserved[i], _overrun[i]), -_reserved[i]))];

    /// <summary>The settle script's values for settle <paramref name="sequence"/> of this lease: each layer's amount, where it was counted.</summary>
    private RedisValue[] SettleValues(long sequence, long[] amounts)
    {
        var values = new RedisValue[2 + (_keys.Length * PolicyScripts.Stride)];
        values[1] = string.Create(CultureInfo.InvariantCulture, $"{_id}#{sequence}");
        long clientNow = _policy.ClientMicroseconds();
        for (int i = 0; i < _keys.Length; i++)
        {
            _policy[i].WriteArguments(values, 2 + (i * PolicyScripts.Stride), _limits[i], amounts[i], _tags[i], clientNow);
        }

        return values;
    }

    /// <summary>
    /// The renewal timer's state: it holds the lease weakly, so a lease never disposed (a caller's bug) is collected, and the
    /// timer then stops itself (its slots expire at the timeout).
    /// </summary>
    private sealed class SlotRenewal(WeakReference<RedisPolicyLease<TContext>> lease)
    {
        public ITimer? Timer { get; set; }

        public void Tick()
        {
            if (lease.TryGetTarget(out RedisPolicyLease<TContext>? open))
            {
                RedisTasks.Observe(open.RenewSlotsAsync());
            }
            else
            {
                Timer?.Dispose();
            }
        }
    }

    /// <summary>A settle sent whose outcome is unknown, and when it was first sent (the policy's clock).</summary>
    private sealed record PendingSettle(RedisValue[] Values, long FirstSent);

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
        if (cost.Tokens > RedisPolicyLayer<TContext>.MaxAmount || cost.Money > RedisPolicyLayer<TContext>.MaxAmount)
        {
            throw new ArgumentOutOfRangeException(parameterName, cost, "A cost on a Redis policy is at most 2^52, so that every sum stays exact in Lua's numbers.");
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
