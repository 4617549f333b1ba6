using System.Runtime.ExceptionServices;

namespace RateEngine.Policies;

/// <summary>
/// An admitted request's holds on every layer, and the settlement of its estimate: step charges, one reconcile, dispose.
/// </summary>
/// <remarks>
/// Every operation takes the lease's lock: a stream's chunks, its reconcile and a disconnect's dispose may come from
/// different threads, and each layer's hold must end exactly once. The lock is the lease's own object, never contended by
/// other requests, and not the lease itself, which callers may lock for their own reasons.
/// The holds array goes back to <see cref="LayerHoldPool"/> when the lease ends, under the lock; from then on the lease holds
/// an empty one, and every operation that could read a hold finds the lease ended first.
/// </remarks>
internal class AcquiredPolicyLease<TContext> : PolicyLease
{
    /// <summary>The lease of a probe (zero permits through <see cref="RatePolicy{TContext}.AsRateLimiter"/>): holds nothing.</summary>
    public static readonly AcquiredPolicyLease<TContext> Probe = new(null, default!, [], default);

    private const int Open = 0;
    private const int Reconciled = 1;
    private const int Ended = 2;

    private readonly RatePolicy<TContext>? _policy;
    private readonly TContext _context;
    private readonly object _gate = new();
    private LayerHold[] _holds;
    private readonly RequestCost _estimate;
    private RequestCost _consumed;
    private int _state;

    /// <summary>Charges and reconciles of this lease under way on the lock's thread (more than one only through user code).</summary>
    private int _settling;

    /// <summary>Whether the lease was reconciled (it stays true once the lease is disposed too).</summary>
    private bool _reconciled;

    public AcquiredPolicyLease(RatePolicy<TContext>? policy, TContext context, LayerHold[] holds, RequestCost estimate)
    {
        _policy = policy;
        _context = context;
        _holds = holds;
        _estimate = estimate;
    }

    public override bool IsAcquired => true;

    public override string? BlockingLayer => null;

    public override string? Reason => null;

    public override TimeSpan? RetryAfter => null;

    public override bool IsServiceWide => false;

    public override RequestCost Estimate => _estimate;

    public override RequestCost Consumed
    {
        get
        {
            lock (_gate)
            {
                return _consumed;
            }
        }
    }

    public override bool IsSettled
    {
        get
        {
            if (_policy is null)
            {
                return true; // the shared probe lease holds nothing to settle
            }

            lock (_gate)
            {
                return _state != Open;
            }
        }
    }

    public override IEnumerable<string> MetadataNames => [];

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = null;
        return false;
    }

    public override void Charge(RequestCost step)
    {
        step.ThrowIfNegative(nameof(step));
        lock (_gate)
        {
            RatePolicy<TContext> policy = OpenPolicy();

            _settling++;
            try
            {
                // The clock before the step is counted: a provider that throws leaves the lease as it was, so a caller that
                // charges the step again does not count it twice.
                long now = policy.Clock.Now();
                _consumed = new RequestCost(checked(_consumed.Tokens + step.Tokens), checked(_consumed.Money + step.Money));
                ExceptionDispatchInfo? failure = null;
                for (int i = 0; i < _holds.Length; i++)
                {
                    PolicyLayer<TContext> layer = policy[i];
                    if (layer.Meter != PolicyMeter.Requests)
                    {
                        // Beyond the estimate and what was charged past it already: an overrun, counted now. Every layer is
                        // charged even if user code on one (a threshold listener) throws: the step was spent on all of them.
                        long excess = _consumed.On(layer.Meter) - _estimate.On(layer.Meter) - _holds[i].Overrun;
                        ChargeLayer(policy, i, now, excess, ref failure);
                        if (_reconciled)
                        {
                            break; // user code there reconciled the lease (and may have disposed it): every layer is settled at that actual
                        }
                    }
                }

                failure?.Throw();
            }
            finally
            {
                _settling--;
            }
        }
    }

    public override RequestCost Reconcile(RequestCost actual)
    {
        actual.ThrowIfNegative(nameof(actual));
        lock (_gate)
        {
            RatePolicy<TContext> policy = OpenPolicy();

            _settling++;
            try
            {
                // The clock first: a provider that throws leaves the lease open, to be reconciled again or disposed. Settled
                // from then on, whatever user code below throws (a selector looking a key up again, a threshold or a reconcile
                // listener): a dispose after a reconcile that failed part-way must not refund what it settled.
                long now = policy.Clock.Now();
                _state = Reconciled;
                _reconciled = true;
                ExceptionDispatchInfo? failure = null;
                long[]? refunds = null;
                for (int i = 0; i < _holds.Length; i++)
                {
                    PolicyLayer<TContext> layer = policy[i];
                    if (layer.Meter == PolicyMeter.Requests)
                    {
                        continue;
                    }

                    long target = actual.On(layer.Meter);
                    long counted = _holds[i].Reserved + _holds[i].Overrun;
                    long refunded = 0;
                    if (target > counted)
                    {
                        ChargeLayer(policy, i, now, target - counted, ref failure);
                    }
                    else if (target < counted)
                    {
                        // Every layer is settled even if user code on one (a selector looking a key up again) throws.
                        try
                        {
                            refunded = layer.Refund(ref _holds[i], counted - target, now);
                        }
                        catch (Exception error)
                        {
                            failure ??= ExceptionDispatchInfo.Capture(error);
                        }
                    }

                    if (policy.ReconcileListener(i) is not null)
                    {
                        (refunds ??= new long[_holds.Length])[i] = refunded;
                    }
                }

                // The listeners last: every layer is settled before any user code there can throw.
                for (int i = 0; refunds is not null && i < _holds.Length; i++)
                {
                    PolicyLayer<TContext> layer = policy[i];
                    if (layer.Meter != PolicyMeter.Requests && policy.ReconcileListener(i) is { } listener)
                    {
                        long estimate = _estimate.On(layer.Meter);
                        long target = actual.On(layer.Meter);
                        ReconcileRecord record;
                        try
                        {
                            record = new ReconcileRecord(layer.Name, layer.KeyOf(_context), layer.Meter, estimate, target, Math.Max(0, target - estimate), refunds[i]);
                        }
                        catch (Exception error)
                        {
                            failure ??= ExceptionDispatchInfo.Capture(error); // the key selector threw
                            continue;
                        }

                        // Each listener on its own: one that throws does not keep the record from the others (cost accounting).
                        Listeners.InvokeEach(listener, record, ref failure);
                    }
                }

                failure?.Throw();
                return actual.PastEstimate(_estimate);
            }
            finally
            {
                _settling--;
            }
        }
    }

    /// <summary>Settles at what the step charges consumed, read under the same lock: a step charged meanwhile is in it.</summary>
    public override RequestCost Reconcile()
    {
        lock (_gate)
        {
            return Reconcile(_consumed);
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (_policy is null)
        {
            return; // the shared probe lease holds nothing
        }

        lock (_gate)
        {
            if (_state == Ended)
            {
                return;
            }

            // A lease that can no longer be reconciled (its policy, or one a combined policy joins, was disposed) keeps its
            // estimate: the policies still running must not count less than the request may have spent.
            bool refundsUnspent = _state == Open && !_policy.IsEnded && _policy.ReleasesOnDispose;
            if (_policy.ReleasesOnDispose)
            {
                // The slots first, and the lease ended with them: they need no clock, and a provider that throws in the
                // refunds below (which read it) then loses a refund (stricter), never a slot.
                for (int i = 0; i < _holds.Length; i++)
                {
                    if (_policy[i].IsConcurrency)
                    {
                        _policy[i].Refund(ref _holds[i], _holds[i].Reserved);
                    }
                }
            }

            _state = Ended;
            for (int i = 0; refundsUnspent && i < _holds.Length; i++)
            {
                PolicyLayer<TContext> layer = _policy[i];
                if (!layer.IsConcurrency && layer.Rule.RefundsUnreconciled)
                {
                    layer.Refund(ref _holds[i], Unspent(layer, _holds[i]));
                }
            }

            // Not from inside a charge or a reconcile of this lease (user code there disposing it): that one still holds
            // references into the array.
            if (_settling == 0)
            {
                LayerHoldPool.Return(_holds);
                _holds = [];
            }
        }
    }

    /// <summary>
    /// What a lease disposed unreconciled gives back on a layer that refunds unreconciled estimates: the reservation less
    /// what step charges consumed of it (those were spent, as the overrun past it was). A request layer gives its request back.
    /// </summary>
    private long Unspent(PolicyLayer<TContext> layer, in LayerHold hold) =>
        layer.Meter == PolicyMeter.Requests ? hold.Reserved : Math.Clamp(hold.Reserved + hold.Overrun - _consumed.On(layer.Meter), 0, hold.Reserved);

    /// <summary>For the finalizer of an abandoned lease: frees its concurrency slots, and names their layers.</summary>
    protected List<string> ReleaseSlots()
    {
        List<string> released = [];
        if (_state == Ended || _policy is null)
        {
            return released;
        }

        for (int i = 0; i < _holds.Length; i++)
        {
            PolicyLayer<TContext> layer = _policy[i];
            if (layer.IsConcurrency && _holds[i].Reserved > 0)
            {
                layer.Refund(ref _holds[i], _holds[i].Reserved);
                released.Add(layer.Name);
            }
        }

        _state = Ended;
        return released;
    }

    protected RatePolicy<TContext>? Policy => _policy;

    /// <summary>
    /// Charges <paramref name="amount"/> on layer <paramref name="index"/>. An exception from user code there (a threshold
    /// listener, a key selector looking the key up again) is kept in <paramref name="failure"/>, so that the other layers are
    /// settled too; the caller throws it once they are.
    /// </summary>
    private void ChargeLayer(RatePolicy<TContext> policy, int index, long now, long amount, ref ExceptionDispatchInfo? failure)
    {
        try
        {
            policy[index].Charge(_context, ref _holds[index], now, amount);
        }
        catch (Exception error)
        {
            failure ??= ExceptionDispatchInfo.Capture(error);
        }
    }

    private RatePolicy<TContext> OpenPolicy()
    {
        if (_policy is null)
        {
            throw new InvalidOperationException("A probe (zero permits) holds nothing to charge or reconcile.");
        }

        _policy.ThrowIfDisposed();
        if (_state != Open)
        {
            throw new InvalidOperationException(_state == Reconciled
                ? "The lease was already reconciled: a request is settled once."
                : "The lease was disposed: its estimate was settled then.");
        }

        return _policy;
    }
}
