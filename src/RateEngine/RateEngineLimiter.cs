using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Limiters;
using RateEngine.Timing;

namespace RateEngine;

/// <summary>
/// The base of every RateEngine limiter: a <see cref="ReplenishingRateLimiter"/> that ASP.NET Core's rate limiting,
/// <see cref="PartitionedRateLimiter"/> and anything else that takes an in-box limiter accept as one.
/// </summary>
/// <remarks>
/// <para><c>AttemptAcquire</c> never takes a lock, and neither does <c>AcquireAsync</c> when the request can pass at
/// once: a clock read and one compare-and-swap decide. Only a request that has to wait takes the queue's lock.</para>
/// <para>Queueing follows the in-box limiters: under <see cref="QueueProcessingOrder.OldestFirst"/> a new request fails
/// (or queues) while permits are queued, and waiters are served in order until the first one that does not fit; under
/// <see cref="QueueProcessingOrder.NewestFirst"/> new requests go first and a full queue evicts its oldest waiters.
/// Waiters are served the moment their permits are free, by a timer of the limiter's <see cref="TimeProvider"/> (or
/// by <c>TryReplenish</c> when replenishment is manual). Cancelling a waiter's token gives its place back.</para>
/// <para>A failed lease carries <c>RETRY_AFTER</c> (the time until the request would pass, behind any queued permits)
/// and <c>REASON_PHRASE</c>. Successful leases are one cached instance: a successful acquire allocates nothing.</para>
/// </remarks>
public abstract partial class RateEngineLimiter : ReplenishingRateLimiter
{
    private readonly AlgorithmHost _host;
    private readonly LimiterClock _clock;
    private readonly long _permitLimit;
    private readonly QueueSettings _settings;
    private readonly LeaseCounters _counters;
    private long _manualIdleSince;
    private volatile bool _disposed;

    private protected RateEngineLimiter(LimiterParts parts)
    {
        _host = parts.Host;
        _clock = parts.Clock;
        _permitLimit = parts.Host.PermitLimit;
        _settings = parts.Queue;
        _counters = parts.Counters;
        _manualIdleSince = parts.Clock.Timestamp();
    }

    /// <inheritdoc />
    public override bool IsAutoReplenishing => !_clock.IsManual;

    /// <inheritdoc />
    public override TimeSpan ReplenishmentPeriod => _settings.ReplenishmentPeriod;

    /// <inheritdoc />
    public override TimeSpan? IdleDuration
    {
        get
        {
            if (QueuedWaiters > 0)
            {
                return null;
            }

            long? fullSince = _host.GetFullSince(_clock.Now());
            if (fullSince is null)
            {
                return null;
            }

            long idleSince = _clock.IsManual ? Volatile.Read(ref _manualIdleSince) : _clock.ToTimestamp(fullSince.Value);
            return _clock.Elapsed(idleSince, _clock.Timestamp());
        }
    }

    /// <summary>
    /// Test and diagnostics hook: sees every admission (lock-free, queued and served), with its decision stamp.
    /// Null in production; the hot path pays one field read.
    /// </summary>
    internal Action<Admission>? AdmissionObserver { get; set; }

    /// <summary>Permits queued right now.</summary>
    internal long QueuedPermits => Volatile.Read(ref _queuedPermits);

    /// <summary>The algorithm's view, for partition statistics and eviction.</summary>
    internal AlgorithmHost Host => _host;

    /// <summary>The limiter's clock, for callers of <see cref="TryReserve"/> and <see cref="TryAdmit"/>.</summary>
    internal LimiterClock Clock => _clock;

    /// <inheritdoc />
    public override RateLimiterStatistics? GetStatistics()
    {
        ThrowIfDisposed();
        return _counters.Statistics(_host.GetAvailablePermits(_clock.Now()), Volatile.Read(ref _queuedPermits));
    }

    /// <inheritdoc />
    public override bool TryReplenish()
    {
        if (!_clock.IsManual)
        {
            return false;
        }

        lock (_queue)
        {
            if (_disposed)
            {
                return true;
            }

            bool wasFull = _host.GetFullSince(_clock.Now()) is not null;
            if (_clock.TryAdvance(wasFull))
            {
                ServeQueueLocked();
                if (!wasFull && _queue.Count == 0 && _host.GetFullSince(_clock.Now()) is not null)
                {
                    Volatile.Write(ref _manualIdleSince, _clock.Timestamp());
                }
            }
        }

        return true;
    }

    /// <inheritdoc />
    protected override RateLimitLease AttemptAcquireCore(int permitCount) => AttemptAcquire(new AnyHostCall(_host), permitCount);

    /// <summary>
    /// <c>AttemptAcquireCore</c> through <paramref name="host"/>, this limiter's host as a type a sealed limiter knows
    /// (see <see cref="IHostCall"/>): the one admit path, compiled for each.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected RateLimitLease AttemptAcquire<THost>(THost host, int permitCount)
        where THost : struct, IHostCall
    {
        // The common case, small enough to inline into the sealed limiter's override: a count it may grant, no queue to
        // respect. Anything else (a bad count, disposal, zero permits, waiters) takes the full path.
        if (permitCount > 0 && permitCount <= _permitLimit && !_disposed && CanBypassQueue())
        {
            if (TryAcquireCounted(host, _clock.Now(), permitCount, out _, out long retryAfter))
            {
                return RateEngineLease.Acquired;
            }

            return Refused(retryAfter);
        }

        return AttemptAcquireInFull(host, permitCount);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private RateLimitLease AttemptAcquireInFull<THost>(THost host, int permitCount)
        where THost : struct, IHostCall
    {
        ThrowHelper.CheckPermitCount(permitCount, _permitLimit, _settings.PermitCountName);
        ThrowIfDisposed();
        long now = _clock.Now();
        if (permitCount == 0)
        {
            return Probe(now);
        }

        if (!CanBypassQueue())
        {
            if (!ServeOverdueQueue() || !CanBypassQueue())
            {
                _counters.Failed();
                return Rejection(now, permitCount, ReasonPhrases.QueuedAhead);
            }

            now = _clock.Now(); // decided after the queue it was behind
        }

        return TryAcquireCounted(host, now, permitCount, out _, out long retryAfter) ? RateEngineLease.Acquired : Refused(retryAfter);
    }

    /// <summary>The reject path: the algorithm already said how long until these permits are free.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private RateEngineLease Refused(long retryAfter)
    {
        _counters.Failed();
        return RateEngineLease.Rejected(_clock.ToRetryAfter(retryAfter), ReasonPhrases.LimitReached);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (!disposing)
        {
            return;
        }

        lock (_queue)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            DisposeQueueLocked();
        }
    }

    /// <inheritdoc />
    protected override ValueTask DisposeAsyncCore()
    {
        Dispose(true);
        return default;
    }

    /// <summary>
    /// The lock-free acquire with a <see cref="Reservation"/> that can undo it once (layered policies, budgets).
    /// Counts statistics like <c>AttemptAcquire</c>.
    /// </summary>
    internal bool TryReserve(long now, int permitCount, [NotNullWhen(true)] out Reservation? reservation)
    {
        if (TryAdmit(now, permitCount, out Admission admission))
        {
            reservation = new Reservation(this, admission);
            return true;
        }

        reservation = null;
        return false;
    }

    /// <summary>
    /// The lock-free acquire with the admission it made, for callers that check decisions by their stamps (tests,
    /// benchmarks). An admission alone cannot be refunded: <see cref="TryReserve"/> hands out the one way to.
    /// Counts statistics like <c>AttemptAcquire</c>.
    /// </summary>
    internal bool TryAdmit(long now, int permitCount, out Admission admission)
    {
        Debug.Assert(permitCount > 0 && permitCount <= _permitLimit);
        if (CanBypassQueue() && TryAcquireCounted(now, permitCount, out admission, out _))
        {
            return true;
        }

        admission = default;
        _counters.Failed();
        return false;
    }

    private bool TryAcquireCounted(long now, int permitCount, out Admission admission, out long retryAfter) =>
        TryAcquireCounted(new AnyHostCall(_host), now, permitCount, out admission, out retryAfter);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryAcquireCounted<THost>(THost host, long now, int permitCount, out Admission admission, out long retryAfter)
        where THost : struct, IHostCall
    {
        if (!host.TryAcquire(now, permitCount, out admission, out retryAfter))
        {
            return false;
        }

        host.CountSuccess(_counters, admission);
        AdmissionObserver?.Invoke(admission);
        return true;
    }

    /// <summary>
    /// Undoes an admission (see <see cref="IRateAlgorithm{TState}.Refund"/>), then serves waiters it unblocks. Only
    /// <see cref="Reservation.Refund"/> calls this, once per reservation: algorithms do not detect a second refund.
    /// </summary>
    private bool Refund(in Admission admission)
    {
        // The refund's CAS is a full fence before this read: it pairs with the fence of a request joining the queue, so
        // either this sees it queued, or it sees the permits back. The waiter count, not the queued permits: a zero-permit
        // waiter adds none, and it waits for a free permit too.
        bool refunded = _host.Refund(admission, _clock.Now());
        if (refunded && QueuedWaiters > 0)
        {
            lock (_queue)
            {
                ServeQueueLocked();
            }
        }

        return refunded;
    }

    private bool CanBypassQueue() => _settings.Order == QueueProcessingOrder.NewestFirst || Volatile.Read(ref _queuedPermits) == 0;

    private RateLimitLease Probe(long now)
    {
        if (_host.GetAvailablePermits(now) > 0)
        {
            _counters.Succeeded();
            return RateEngineLease.Acquired;
        }

        _counters.Failed();
        return Rejection(now, 0, ReasonPhrases.LimitReached);
    }

    /// <summary>
    /// A failed lease whose <c>RETRY_AFTER</c> is the time until <paramref name="permitCount"/> permits would be free
    /// behind the permits already queued, which may take more than one refill of the limit.
    /// </summary>
    private RateEngineLease Rejection(long now, long permitCount, string reason)
    {
        // A probe (zero permits) asks for one permit left over once the queue ahead of it has taken its own.
        long queued = _settings.Order == QueueProcessingOrder.OldestFirst ? Volatile.Read(ref _queuedPermits) : 0;
        long permits = queued + Math.Max(1, permitCount);
        return RateEngineLease.Rejected(_clock.ToRetryAfter(_host.GetRetryAfterBehind(now, permits)), reason);
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            ThrowHelper.Disposed(this);
        }
    }
}
