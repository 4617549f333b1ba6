using System.Threading.RateLimiting;
using RateEngine.Redis.Scripts;
using StackExchange.Redis;

namespace RateEngine.Redis.Policies;

/// <summary>
/// An acquired lease of a <see cref="RedisRatePolicy{TContext}"/>: what each layer reserved and where (its window, segment or
/// period), so that a step charge, a reconcile or a dispose settles every layer in one script call.
/// </summary>
/// <remarks>
/// The async settles await one script call; the sync ones block at most the policy's sync timeout. A charge or reconcile
/// that Redis does not answer throws and leaves the lease open (retry it, or dispose: the estimate is kept, stricter). A
/// dispose sends its release without waiting: if Redis does not take it, a concurrency slot frees itself at the lease timeout.
/// </remarks>
internal sealed class RedisPolicyLease<TContext> : PolicyLease
{
    private const int Open = 0;
    private const int Reconciled = 1;
    private const int Ended = 2;

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

    public override void Charge(RequestCost step) => Wait(ChargeAsync(step).AsTask());

    public override RequestCost Reconcile(RequestCost actual) => Wait(ReconcileAsync(actual).AsTask());

    public override async ValueTask ChargeAsync(RequestCost step, CancellationToken cancellationToken = default)
    {
        step.ThrowIfNegative(nameof(step));
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
                amounts[i] = layer.IsWeighted ? Math.Max(0, consumed.On(layer.Rule.Meter) - _reserved[i] - _overrun[i]) : 0;
            }

            if (amounts.Any(amount => amount > 0))
            {
                await RunAsync(amounts).ConfigureAwait(false);
                for (int i = 0; i < amounts.Length; i++)
                {
                    _overrun[i] += amounts[i];
                }
            }

            lock (_overrun)
            {
                _consumed = consumed;
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    public override async ValueTask<RequestCost> ReconcileAsync(RequestCost actual, CancellationToken cancellationToken = default)
    {
        actual.ThrowIfNegative(nameof(actual));
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ThrowIfNotOpen();
            var amounts = new long[_keys.Length];
            for (int i = 0; i < _keys.Length; i++)
            {
                RedisPolicyLayer<TContext> layer = _policy[i];
                amounts[i] = layer.IsWeighted ? actual.On(layer.Rule.Meter) - (_reserved[i] + _overrun[i]) : 0; // > 0 charges, < 0 refunds
            }

            if (amounts.Any(amount => amount != 0))
            {
                await RunAsync(amounts).ConfigureAwait(false);
            }

            _state = Reconciled;
            return new RequestCost(Math.Max(0, actual.Tokens - _estimate.Tokens), Math.Max(0, actual.Money - _estimate.Money));
        }
        finally
        {
            _gate.Release();
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (!_gate.Wait(_policy.SyncTimeout))
        {
            return; // a settle is stuck on a dead Redis: the slot frees itself at the lease timeout
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
                RedisPolicyLayer<TContext> layer = _policy[i];
                amounts[i] = layer.IsConcurrency ? 1 // releases the slot
                    : _state == Open && layer.Rule.RefundsUnreconciled && layer.IsWeighted ? -(_reserved[i] + _overrun[i])
                    : 0;
            }

            _state = Ended;
            if (amounts.Any(amount => amount != 0))
            {
                // Not awaited: a dispose never blocks on the network. Given up on, a slot frees itself at the lease timeout
                // and an unreconciled estimate stays counted (stricter).
                RedisTasks.Observe(RunAsync(amounts));
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>One settle call for every layer at once.</summary>
    private async Task RunAsync(long[] amounts)
    {
        if (_unbacked is not null)
        {
            return;
        }

        var values = new RedisValue[2 + (_keys.Length * PolicyScripts.Stride)];
        values[1] = _id;
        long clientNow = _policy.ClientMicroseconds();
        for (int i = 0; i < _keys.Length; i++)
        {
            _policy[i].WriteArguments(values, 2 + (i * PolicyScripts.Stride), _limits[i], amounts[i], _tags[i], clientNow);
        }

        try
        {
            await _policy.Settle(_keys, values).ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            _policy.Trip(error.Message);
            throw;
        }

        _policy.Succeeded();
    }

    /// <summary>The sync methods: block at most the policy's sync timeout (the settle may still land later).</summary>
    private T Wait<T>(Task<T> task)
    {
        Wait((Task)task);
        return task.Result;
    }

    private void Wait(Task task) => RedisTasks.WaitWithin(task, _policy.SyncTimeout);

    private void ThrowIfNotOpen()
    {
        if (_state != Open)
        {
            throw new InvalidOperationException(_state == Reconciled
                ? "The lease was already reconciled: a request is settled once."
                : "The lease was disposed: its estimate was settled then.");
        }
    }
}
