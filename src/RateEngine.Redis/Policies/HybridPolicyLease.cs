using System.Runtime.ExceptionServices;
namespace RateEngine.Redis.Policies;

/// <summary>
/// An acquired lease of a <see cref="RedisRatePolicy{TContext}"/> in the hybrid mode: what each block-served layer took
/// and from which block (its window, segment or period), and the lease of the layers decided on Redis, if any.
/// </summary>
/// <remarks>
/// A refund goes back into the key's live block of the same period, or to Redis while that period counts it; an overrun
/// is taken from the key's live block, and what no block covers is counted on Redis by the key's next reservation, which
/// is started at once (<see cref="ReconcileAsync"/> and <see cref="ChargeAsync"/> wait for it). A refund gives back at
/// most what the lease took: an overrun was spent, so it stays counted.
/// </remarks>
internal sealed class HybridPolicyLease<TContext> : PolicyLease
{
    private const int Open = RedisPolicyLease<TContext>.Open;
    private const int Reconciled = RedisPolicyLease<TContext>.Reconciled;
    private const int Ended = RedisPolicyLease<TContext>.Ended;

    private static readonly string[] NoMetadata = [];

    private readonly RedisRatePolicy<TContext> _policy;
    private readonly LocalTakes _takes;
    private readonly long[] _overrun;
    private readonly PolicyLease? _remote;
    private readonly RequestCost _estimate;
    private RequestCost _consumed;
    private int _state;

    public HybridPolicyLease(RedisRatePolicy<TContext> policy, LocalTakes takes, PolicyLease? remote, RequestCost estimate, IReadOnlyList<LayerUsage>? usage)
    {
        UsageAtDecision = usage;
        _policy = policy;
        _takes = takes;
        _overrun = new long[takes.Keys.Length];
        _remote = remote;
        _estimate = estimate;
    }

    public override bool IsAcquired => true;

    public override string? BlockingLayer => null;

    public override string? Reason => _remote?.Reason;

    public override TimeSpan? RetryAfter => null;

    public override bool IsServiceWide => false;

    public override RequestCost Estimate => _estimate;

    public override RequestCost Consumed
    {
        get
        {
            lock (_overrun)
            {
                return _consumed;
            }
        }
    }

    /// <summary>Settled here, and on Redis too when layers live there: a remote reconcile that could not be sent leaves it false.</summary>
    public override bool IsSettled
    {
        get
        {
            lock (_overrun)
            {
                if (_state == Open)
                {
                    return false;
                }
            }

            return _remote?.IsSettled ?? true;
        }
    }

    public override IEnumerable<string> MetadataNames => _remote?.MetadataNames ?? NoMetadata;

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = null;
        return _remote is not null && _remote.TryGetMetadata(metadataName, out metadata);
    }

    public override void Charge(RequestCost step)
    {
        ChargeLocal(step, out ExceptionDispatchInfo? chargeFailed);
        _remote?.Charge(step);
        chargeFailed?.Throw();
    }

    public override async ValueTask ChargeAsync(RequestCost step, CancellationToken cancellationToken = default)
    {
        // Cancellation counts only before anything is charged, as for a reconcile: once the blocks have counted the step,
        // the exact part counts it too (a token cancelled meanwhile would leave it on one side only, and a caller that
        // charged again would count it twice there).
        cancellationToken.ThrowIfCancellationRequested();
        ExceptionDispatchInfo? countFailed = await CountDebtsAsync(ChargeLocal(step, out ExceptionDispatchInfo? chargeFailed)).ConfigureAwait(false);
        if (_remote is not null)
        {
            await _remote.ChargeAsync(step, CancellationToken.None).ConfigureAwait(false);
        }

        ThrowIfFailed(countFailed, chargeFailed);
    }

    public override RequestCost Reconcile(RequestCost actual)
    {
        ReconcileLocal(actual, out ExceptionDispatchInfo? giveBackFailed);
        _remote?.Reconcile(actual);
        giveBackFailed?.Throw();
        return Overrun(actual);
    }

    /// <summary>Settles at what was consumed, read under the lock that step charges take: one charged meanwhile is in it.</summary>
    public override RequestCost Reconcile()
    {
        RequestCost actual;
        ExceptionDispatchInfo? giveBackFailed;
        lock (_overrun)
        {
            actual = _consumed;
            ReconcileLocal(actual, out giveBackFailed);
        }

        _remote?.Reconcile(actual);
        giveBackFailed?.Throw();
        return Overrun(actual);
    }

    public override async ValueTask<RequestCost> ReconcileAsync(RequestCost actual, CancellationToken cancellationToken = default)
    {
        // Cancellation counts only before anything is settled: once the blocks are settled here, Redis is settled too.
        cancellationToken.ThrowIfCancellationRequested();
        bool owed = ReconcileLocal(actual, out ExceptionDispatchInfo? giveBackFailed);
        ExceptionDispatchInfo? countFailed = await CountDebtsAsync(owed).ConfigureAwait(false);
        if (_remote is not null)
        {
            await _remote.ReconcileAsync(actual, CancellationToken.None).ConfigureAwait(false);
        }

        ThrowIfFailed(countFailed, giveBackFailed);
        return Overrun(actual);
    }

    /// <summary>Settles at what was consumed, read under the lock that step charges take: one charged meanwhile is in it.</summary>
    public override async ValueTask<RequestCost> ReconcileConsumedAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested(); // as ReconcileAsync: not once anything is settled
        RequestCost actual;
        bool owed;
        ExceptionDispatchInfo? giveBackFailed;
        lock (_overrun)
        {
            actual = _consumed;
            owed = ReconcileLocal(actual, out giveBackFailed);
        }

        ExceptionDispatchInfo? countFailed = await CountDebtsAsync(owed).ConfigureAwait(false);
        if (_remote is not null)
        {
            await _remote.ReconcileAsync(actual, CancellationToken.None).ConfigureAwait(false);
        }

        ThrowIfFailed(countFailed, giveBackFailed);
        return Overrun(actual);
    }

    /// <summary>
    /// Throws what failed while settling, the debt's failure first: one exception of the types the caller expects (a store
    /// failure, a clock's), not an aggregate, as when only one failed.
    /// </summary>
    private static void ThrowIfFailed(ExceptionDispatchInfo? first, ExceptionDispatchInfo? second)
    {
        first?.Throw();
        second?.Throw();
    }

    /// <summary>
    /// Carries what the blocks owe to Redis (when the local settle left a debt) and hands back what that threw instead of
    /// throwing it: the exact part is settled next whatever happened here, since the lease is settled locally already and
    /// a retry would be refused. A debt a failed reservation could not carry stays owed, for the key's next one.
    /// </summary>
    private async ValueTask<ExceptionDispatchInfo?> CountDebtsAsync(bool owed)
    {
        if (!owed)
        {
            return null;
        }

        try
        {
            await _policy.CountDebtsAsync(_takes).ConfigureAwait(false);
            return null;
        }
        catch (Exception error)
        {
            return ExceptionDispatchInfo.Capture(error);
        }
    }

    /// <summary>Undoes an admission nobody will use (its acquire was given up): every take goes back, the remote part rolls back.</summary>
    public Task RollBackAsync()
    {
        lock (_overrun)
        {
            if (_state != Ended)
            {
                _state = Ended;
                _policy.GiveBack(_takes, _takes.Amounts);
            }
        }

        return _remote is RedisPolicyLease<TContext> remote ? remote.RollBackAsync() : Task.CompletedTask;
    }

    protected override void Dispose(bool disposing)
    {
        try
        {
            lock (_overrun)
            {
                if (_state != Ended)
                {
                    // Ended first: a give-back reads the clock, and one that throws part-way must not leave the lease to give
                    // back again (what it did not reach stays counted: stricter).
                    bool open = _state == Open;
                    _state = Ended;
                    if (open)
                    {
                        // What the steps did not consume, on layers that refund unreconciled estimates: what they did, and
                        // an overrun past it, was spent.
                        long[] refunds = new long[_takes.Keys.Length];
                        for (int i = 0; i < refunds.Length; i++)
                        {
                            RedisPolicyLayer<TContext> layer = _policy.BlockLayer(i);
                            refunds[i] = layer.Rule.RefundsUnreconciled ? layer.Unspent(_consumed, _takes.Amounts[i], _overrun[i]) : 0;
                        }

                        _policy.GiveBack(_takes, refunds);
                    }
                }
            }
        }
        finally
        {
            _remote?.Dispose(); // the exact part's concurrency slot goes whatever the blocks' give-back met
        }
    }

    private RequestCost Overrun(RequestCost actual) => actual.PastEstimate(_estimate);

    /// <summary>
    /// The step's part past the estimate on each weighted block-served layer, taken now; whether Redis is owed some. A layer
    /// whose charge threw (its clock) owes the whole part, and the step is recorded on every layer all the same: the first
    /// such exception is handed out in <paramref name="chargeFailed"/>, for the caller to throw once the exact part is
    /// charged too (a charge that threw is not charged again, so none of it may be left out).
    /// </summary>
    private bool ChargeLocal(RequestCost step, out ExceptionDispatchInfo? chargeFailed)
    {
        chargeFailed = null;
        RedisPolicyLease<TContext>.ThrowIfNotExact(step, nameof(step));
        lock (_overrun)
        {
            ThrowIfNotOpen();
            RequestCost consumed = new(_consumed.Tokens + step.Tokens, _consumed.Money + step.Money);
            CheckClockBeforeOverruns(consumed);
            bool owed = false;
            for (int i = 0; i < _overrun.Length; i++)
            {
                RedisPolicyLayer<TContext> layer = _policy.BlockLayer(i);
                long over = Math.Max(0, layer.PastReservation(consumed, _takes.Amounts[i], _overrun[i]));
                if (over > 0)
                {
                    owed |= ChargeOverrun(i, over, ref chargeFailed);
                    _overrun[i] += over;
                }
            }

            _consumed = consumed;
            return owed;
        }
    }

    /// <summary>
    /// When <paramref name="total"/> goes past some layer's reservation, reads the blocks' clock first: a clock that fails
    /// now fails the call with nothing counted (a retry is safe), not part-way through the layers.
    /// </summary>
    private void CheckClockBeforeOverruns(RequestCost total)
    {
        for (int i = 0; i < _overrun.Length; i++)
        {
            if (_policy.BlockLayer(i).PastReservation(total, _takes.Amounts[i], _overrun[i]) > 0)
            {
                _policy.CheckClock();
                return;
            }
        }
    }

    /// <summary>Charges one layer's overrun; one whose clock threw owes it whole (see ChargeOverrun), its exception kept.</summary>
    private bool ChargeOverrun(int index, long over, ref ExceptionDispatchInfo? failed)
    {
        try
        {
            return _policy.ChargeOverrun(index, _takes.Keys[index], over);
        }
        catch (Exception error)
        {
            failed ??= ExceptionDispatchInfo.Capture(error);
            return true;
        }
    }

    /// <summary>
    /// Refunds what the actual leaves of each weighted layer's take, or charges what it goes past; whether Redis is owed some.
    /// An overrun charge or a give-back that throws (each reads the clock) is handed out in <paramref name="giveBackFailed"/>,
    /// the lease settled (a layer whose charge threw owes its overrun whole): the caller reconciles the exact part first,
    /// then throws it.
    /// </summary>
    private bool ReconcileLocal(RequestCost actual, out ExceptionDispatchInfo? giveBackFailed)
    {
        giveBackFailed = null;
        RedisPolicyLease<TContext>.ThrowIfNotExact(actual, nameof(actual));
        lock (_overrun)
        {
            ThrowIfNotOpen();
            CheckClockBeforeOverruns(actual);
            bool owed = false;
            long[] refunds = new long[_overrun.Length];
            for (int i = 0; i < _overrun.Length; i++)
            {
                RedisPolicyLayer<TContext> layer = _policy.BlockLayer(i);
                if (!layer.IsWeighted)
                {
                    continue;
                }

                long difference = layer.PastReservation(actual, _takes.Amounts[i], _overrun[i]);
                if (difference > 0)
                {
                    owed |= ChargeOverrun(i, difference, ref giveBackFailed);
                    _overrun[i] += difference;
                }
                else
                {
                    refunds[i] = Math.Min(-difference, _takes.Amounts[i]);
                }
            }

            // Settled first: a give-back reads the clock, and one that throws part-way must not leave the lease open to a
            // second reconcile or a dispose that would give back again (what it did not reach stays counted: stricter).
            _state = Reconciled;
            try
            {
                _policy.GiveBack(_takes, refunds);
            }
            catch (Exception error)
            {
                giveBackFailed ??= ExceptionDispatchInfo.Capture(error);
            }

            return owed;
        }
    }

    private void ThrowIfNotOpen() => RedisPolicyLease<TContext>.ThrowIfNotOpen(_state);
}
