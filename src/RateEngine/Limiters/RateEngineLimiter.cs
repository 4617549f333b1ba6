using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine;

/// <summary>
/// The <see cref="System.Threading.RateLimiting"/> contract, written once for every RateEngine limiter: argument
/// checks, zero-permit probes, the wait queue and its processing order, cancellation, <c>RETRY_AFTER</c> and
/// <c>REASON_PHRASE</c> metadata, statistics, idle tracking, manual replenishment and disposal.
/// </summary>
/// <remarks>
/// <para><c>AttemptAcquire</c> never takes a lock: it reads the clock, asks the algorithm (a CAS loop) and returns a
/// cached lease. The queue lock is taken only by <c>AcquireAsync</c> when it has to wait, by queue servicing, by
/// cancellation and by <c>TryReplenish</c>/<c>Dispose</c>.</para>
/// <para>Queue semantics follow the in-box limiters: under <see cref="QueueProcessingOrder.OldestFirst"/> a new request
/// fails (or queues) while permits are queued, and servicing stops at the first waiter that cannot be served; under
/// <see cref="QueueProcessingOrder.NewestFirst"/> new requests go first and a full queue evicts its oldest waiters.
/// Queued waiters are served when the algorithm says their permits are free, by a timer from the limiter's
/// <see cref="TimeProvider"/> (or by <c>TryReplenish</c> when replenishment is manual).</para>
/// </remarks>
public abstract partial class RateEngineLimiter : ReplenishingRateLimiter
{
    private readonly AlgorithmHost _host;
    private readonly LimiterClock _clock;
    private readonly long _permitLimit;
    private readonly int _queueLimit;
    private readonly QueueProcessingOrder _order;
    private readonly TimeSpan _replenishmentPeriod;
    private readonly string _permitCountName;

    // The queue and everything below are guarded by the queue's lock; _queuedPermits is also read without it.
    private readonly WaiterQueue _queue = new();
    private long _queuedPermits;
    private ITimer? _wakeup;
    private bool _wakeupArmed;
    private long _wakeupDue;
    private long _manualIdleSince;
    private volatile bool _disposed;
    private bool _retired;

    private readonly StripedCounter _successfulLeases;
    private readonly StripedCounter _failedLeases;

    private protected RateEngineLimiter(LimiterParts parts)
    {
        _host = parts.Host;
        _clock = parts.Clock;
        _permitLimit = parts.Host.PermitLimit;
        _queueLimit = parts.QueueLimit;
        _order = parts.QueueProcessingOrder;
        _replenishmentPeriod = parts.ReplenishmentPeriod;
        _permitCountName = parts.PermitCountName;
        _manualIdleSince = parts.Clock.Timestamp();
        _successfulLeases = parts.SuccessfulLeases ?? new StripedCounter();
        _failedLeases = parts.FailedLeases ?? new StripedCounter();
    }

    /// <inheritdoc />
    public override bool IsAutoReplenishing => !_clock.IsManual;

    /// <inheritdoc />
    public override TimeSpan ReplenishmentPeriod => _replenishmentPeriod;

    /// <inheritdoc />
    public override TimeSpan? IdleDuration
    {
        get
        {
            if (Volatile.Read(ref _queuedPermits) > 0 || _queue.Count > 0)
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

    /// <inheritdoc />
    public override RateLimiterStatistics? GetStatistics()
    {
        ThrowIfDisposed();
        return new RateLimiterStatistics
        {
            CurrentAvailablePermits = _host.GetAvailablePermits(_clock.Now()),
            CurrentQueuedCount = Volatile.Read(ref _queuedPermits),
            TotalFailedLeases = _failedLeases.Sum(),
            TotalSuccessfulLeases = _successfulLeases.Sum(),
        };
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
    protected override RateLimitLease AttemptAcquireCore(int permitCount)
    {
        CheckPermitCount(permitCount);
        ThrowIfDisposed();
        long now = _clock.Now();
        if (permitCount == 0)
        {
            return Probe(now);
        }

        if (!CanBypassQueue())
        {
            _failedLeases.Increment();
            return Rejection(now, permitCount, ReasonPhrases.QueuedAhead);
        }

        if (TryAcquireCounted(now, permitCount, out _, out long retryAfter))
        {
            return RateEngineLease.Acquired;
        }

        // The reject path: the algorithm already said how long until these permits are free.
        _failedLeases.Increment();
        return RateEngineLease.Rejected(_clock.ToRetryAfter(retryAfter), ReasonPhrases.LimitReached);
    }

    /// <inheritdoc />
    protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
    {
        CheckPermitCount(permitCount);
        ThrowIfDisposed();

        // One clock read serves the whole call: a decision taken under the lock with it is taken as of a moment
        // before the lock, which can only find fewer permits free (and the wakeup timer then comes for the rest).
        long now = _clock.Now();

        // The lock-free admission AttemptAcquire makes: a request that can pass now never takes the queue's lock.
        if (TryPassWithoutWaiting(now, permitCount))
        {
            return new ValueTask<RateLimitLease>(RateEngineLease.Acquired);
        }

        lock (_queue)
        {
            ThrowIfDisposed();
            if (_retired)
            {
                return new ValueTask<RateLimitLease>(RateEngineLease.Retired);
            }

            if (TryPassWithoutWaiting(now, permitCount))
            {
                return new ValueTask<RateLimitLease>(RateEngineLease.Acquired);
            }

            // Subtraction, not addition: int.MaxValue-sized requests and queues must not wrap.
            if (_queueLimit - _queuedPermits < permitCount)
            {
                if (_order == QueueProcessingOrder.NewestFirst && permitCount <= _queueLimit)
                {
                    do
                    {
                        Complete(_queue.First!, RateEngineLease.Evicted);
                        _failedLeases.Increment();
                    }
                    while (_queueLimit - _queuedPermits < permitCount);
                }
                else
                {
                    _failedLeases.Increment();
                    return new ValueTask<RateLimitLease>(Rejection(now, permitCount, ReasonPhrases.QueueFull));
                }
            }

            var waiter = new Waiter(this, permitCount);
            _queue.AddLast(waiter);
            Volatile.Write(ref _queuedPermits, _queuedPermits + permitCount);

            // A token cancelled by now runs the callback inline; the lock is re-entrant and the waiter is already queued.
            waiter.Registration = cancellationToken.UnsafeRegister(
                static (state, token) => ((Waiter)state!).Owner.Cancel((Waiter)state!, token), waiter);
            ScheduleWakeupLocked(now);
            return new ValueTask<RateLimitLease>(waiter.Task);
        }
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
            _wakeup?.Dispose();
            while (_queue.Count > 0)
            {
                Complete(ServiceHead()!, RateEngineLease.Disposed);
            }
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
        _failedLeases.Increment();
        return false;
    }

    /// <summary>
    /// Test and diagnostics hook: sees every admission (lock-free, queued and served), with its decision stamp.
    /// Null in production; the hot path pays one field read.
    /// </summary>
    internal Action<Admission>? AdmissionObserver { get; set; }

    private bool TryAcquireCounted(long now, int permitCount, out Admission admission, out long retryAfter)
    {
        if (!_host.TryAcquire(now, permitCount, out admission, out retryAfter))
        {
            return false;
        }

        _successfulLeases.Increment();
        AdmissionObserver?.Invoke(admission);
        return true;
    }

    /// <summary>
    /// Undoes an admission (see <see cref="IRateAlgorithm{TState}.Refund"/>), then serves waiters it unblocks. Only
    /// <see cref="Reservation.Refund"/> calls this, once per reservation: algorithms do not detect a second refund.
    /// </summary>
    private bool Refund(in Admission admission)
    {
        bool refunded = _host.Refund(admission);
        if (refunded && Volatile.Read(ref _queuedPermits) > 0)
        {
            lock (_queue)
            {
                ServeQueueLocked();
            }
        }

        return refunded;
    }

    /// <summary>
    /// Partition eviction: stops accepting waiters if none are queued (<c>AcquireAsync</c> then answers
    /// <see cref="RateEngineLease.Retired"/>, telling the caller to look its key up again). Returns false when waiters exist.
    /// </summary>
    internal bool TryRetire()
    {
        lock (_queue)
        {
            _retired = _queue.Count == 0;
            return _retired;
        }
    }

    /// <summary>Undoes <see cref="TryRetire"/> when the eviction it prepared does not happen.</summary>
    internal void Unretire()
    {
        lock (_queue)
        {
            _retired = false;
        }
    }

    /// <summary>Permits queued right now.</summary>
    internal long QueuedPermits => Volatile.Read(ref _queuedPermits);

    /// <summary>The algorithm's view, for partition statistics and eviction.</summary>
    internal AlgorithmHost Host => _host;

    /// <summary>The limiter's clock, for callers of <see cref="TryAdmit"/>.</summary>
    internal LimiterClock Clock => _clock;

    /// <summary>
    /// AcquireAsync's request passes at once: zero permits while any is free, or n permits taken without queueing
    /// (nobody queued ahead, or NewestFirst). Counts the success.
    /// </summary>
    private bool TryPassWithoutWaiting(long now, int permitCount)
    {
        if (permitCount > 0)
        {
            return CanBypassQueue() && TryAcquireCounted(now, permitCount, out _, out _);
        }

        if (_host.GetAvailablePermits(now) > 0)
        {
            _successfulLeases.Increment();
            return true;
        }

        return false;
    }

    private bool CanBypassQueue() => _order == QueueProcessingOrder.NewestFirst || Volatile.Read(ref _queuedPermits) == 0;

    private RateLimitLease Probe(long now)
    {
        if (_host.GetAvailablePermits(now) > 0)
        {
            _successfulLeases.Increment();
            return RateEngineLease.Acquired;
        }

        _failedLeases.Increment();
        return Rejection(now, 0, ReasonPhrases.LimitReached);
    }

    /// <summary>
    /// A failed lease whose <c>RETRY_AFTER</c> is the time until <paramref name="permitCount"/> permits would be free
    /// behind the permits already queued, which may take more than one refill of the limit.
    /// </summary>
    private RateEngineLease Rejection(long now, long permitCount, string reason)
    {
        long queued = _order == QueueProcessingOrder.OldestFirst ? Volatile.Read(ref _queuedPermits) : 0;
        long permits = Math.Max(1, queued + permitCount);
        return RateEngineLease.Rejected(_clock.ToRetryAfter(_host.GetRetryAfterBehind(now, permits)), reason);
    }

    private void CheckPermitCount(int permitCount)
    {
        if (permitCount > _permitLimit)
        {
            ThrowHelper.PermitCountExceedsLimit(_permitCountName, permitCount, _permitLimit);
        }
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            ThrowHelper.Disposed(this);
        }
    }

    private Waiter? ServiceHead() => _order == QueueProcessingOrder.OldestFirst ? _queue.First : _queue.Last;

    /// <summary>Serves waiters in processing order until the first one whose permits are not free.</summary>
    private void ServeQueueLocked()
    {
        if (_disposed)
        {
            return;
        }

        long now = _clock.Now();
        while (ServiceHead() is { } waiter)
        {
            if (waiter.Count == 0)
            {
                // Its turn has come and it needs nothing: served, as in-box (whose check is "available >= 0").
                _successfulLeases.Increment();
            }
            else if (!TryAcquireCounted(now, waiter.Count, out _, out _))
            {
                break;
            }

            // Completions happen only under this lock, so a queued waiter cannot have been cancelled meanwhile.
            bool completed = Complete(waiter, RateEngineLease.Acquired);
            Debug.Assert(completed);
        }

        ScheduleWakeupLocked(now);
    }

    /// <summary>Arms the timer for when the service head's permits will be free (automatic replenishment only).</summary>
    private void ScheduleWakeupLocked(long now)
    {
        if (_clock.IsManual || _disposed || ServiceHead() is not { } head)
        {
            return;
        }

        long ticks = Math.Max(1, _host.GetRetryAfter(now, Math.Max(1, head.Count)));
        long due = ticks > long.MaxValue - now ? long.MaxValue : now + ticks;

        // Re-arming costs a trip through the timer queue's lock. A timer already due no later than this fires, serves
        // what it can and re-arms for the rest, so a wakeup that comes early is harmless and one that comes late is not.
        if (_wakeupArmed && _wakeupDue <= due)
        {
            return;
        }

        _wakeup ??= _clock.Provider.CreateTimer(
            static state => ((RateEngineLimiter)state!).OnWakeup(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _wakeupArmed = true;
        _wakeupDue = due;
        _wakeup.Change(WakeupDelay(_clock.ToTimeSpan(ticks)), Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// The timer delay for a wakeup due in <paramref name="due"/>. Timers count whole milliseconds and drop the rest, so
    /// the delay is rounded up: an early wakeup finds nothing to serve and re-arms for less than a millisecond, which
    /// fires at once, again and again until the clock catches up (forever under a clock that moves only when told to).
    /// Timers also refuse delays beyond about 49.7 days; a longer wait is capped there and re-arms for the rest.
    /// </summary>
    private static TimeSpan WakeupDelay(TimeSpan due)
    {
        const long MaxTimerMilliseconds = 0xFFFFFFFE;
        long milliseconds = (due.Ticks / TimeSpan.TicksPerMillisecond) + (due.Ticks % TimeSpan.TicksPerMillisecond > 0 ? 1 : 0);
        return TimeSpan.FromTicks(Math.Clamp(milliseconds, 1, MaxTimerMilliseconds) * TimeSpan.TicksPerMillisecond);
    }

    private void OnWakeup()
    {
        lock (_queue)
        {
            _wakeupArmed = false;
            ServeQueueLocked();
        }
    }

    private void Cancel(Waiter waiter, CancellationToken token)
    {
        lock (_queue)
        {
            if (!waiter.Queued)
            {
                return; // already served, evicted or failed by Dispose
            }

            RemoveLocked(waiter);
            waiter.TrySetCanceled(token);

            // The cancelled waiter may have been the head of the line: the next one may be due sooner.
            ScheduleWakeupLocked(_clock.Now());
        }
    }

    /// <summary>Takes a waiter off the queue and completes it. Under the lock, so cancellation cannot interleave.</summary>
    private bool Complete(Waiter waiter, RateLimitLease lease)
    {
        RemoveLocked(waiter);
        waiter.Registration.Unregister();
        return waiter.TrySetResult(lease);
    }

    private void RemoveLocked(Waiter waiter)
    {
        Debug.Assert(Monitor.IsEntered(_queue));
        _queue.Remove(waiter);
        Volatile.Write(ref _queuedPermits, _queuedPermits - waiter.Count);
        Debug.Assert(_queuedPermits >= 0);
    }

    private sealed class Waiter(RateEngineLimiter owner, int count)
        : TaskCompletionSource<RateLimitLease>(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public RateEngineLimiter Owner { get; } = owner;

        public int Count { get; } = count;

        public CancellationTokenRegistration Registration { get; set; }

        // Links of the wait queue, which is threaded through the waiters so that queueing allocates no list node.
        public Waiter? Previous;
        public Waiter? Next;
        public bool Queued;
    }

    /// <summary>The wait queue in arrival order: a doubly linked list through the waiters. Guarded by its own lock.</summary>
    private sealed class WaiterQueue
    {
        public Waiter? First;
        public Waiter? Last;
        public int Count;

        public void AddLast(Waiter waiter)
        {
            Debug.Assert(!waiter.Queued);
            waiter.Previous = Last;
            waiter.Next = null;
            if (Last is null)
            {
                First = waiter;
            }
            else
            {
                Last.Next = waiter;
            }

            Last = waiter;
            waiter.Queued = true;
            Count++;
        }

        public void Remove(Waiter waiter)
        {
            Debug.Assert(waiter.Queued);
            if (waiter.Previous is null)
            {
                First = waiter.Next;
            }
            else
            {
                waiter.Previous.Next = waiter.Next;
            }

            if (waiter.Next is null)
            {
                Last = waiter.Previous;
            }
            else
            {
                waiter.Next.Previous = waiter.Previous;
            }

            waiter.Previous = null;
            waiter.Next = null;
            waiter.Queued = false;
            Count--;
        }
    }
}

/// <summary>What a concrete limiter hands to <see cref="RateEngineLimiter"/>: its algorithm, clock and queue settings.</summary>
internal sealed record LimiterParts(
    AlgorithmHost Host,
    LimiterClock Clock,
    int QueueLimit,
    QueueProcessingOrder QueueProcessingOrder,
    TimeSpan ReplenishmentPeriod,
    string PermitCountName = "permitCount",
    StripedCounter? SuccessfulLeases = null,
    StripedCounter? FailedLeases = null);
