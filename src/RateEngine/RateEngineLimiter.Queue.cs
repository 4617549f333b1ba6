using System.Diagnostics;
using System.Threading.RateLimiting;
using RateEngine.Limiters;
using RateEngine.Timing;

namespace RateEngine;

/// <content>
/// The wait queue: <c>AcquireAsync</c> for requests that cannot pass at once, serving waiters in processing order when
/// their permits are free (a wakeup timer, <c>TryReplenish</c>, a refund), cancellation and eviction. Everything here
/// runs under the queue's lock except the lock-free first attempt of <c>AcquireAsync</c>.
/// </content>
public abstract partial class RateEngineLimiter
{
    // Guarded by the queue's lock; _queuedPermits is also read without it.
    private readonly WaiterQueue _queue = new();
    private long _queuedPermits;
    private ITimer? _wakeup;
    private bool _wakeupArmed;
    private long _wakeupDue;

    /// <summary>The delay of the last retry after a failed wake-up, in milliseconds (0 while wake-ups succeed).</summary>
    private int _wakeupRetryMilliseconds;

    /// <summary>The lock that guards the queue, for a subclass that must act atomically with queueing.</summary>
    private protected object QueueLock => _queue;

    /// <summary>
    /// Waiters queued, read without the lock: after a full fence, a waiter queued before the fence of its own enqueue (see
    /// <see cref="AcquireAsyncCore"/>) is seen. A zero-permit waiter counts here, though it adds no queued permits.
    /// </summary>
    private int QueuedWaiters => Volatile.Read(ref _queue.Count);

    /// <summary>Waiters queued right now. Under <see cref="QueueLock"/>.</summary>
    private protected int WaiterCount
    {
        get
        {
            Debug.Assert(Monitor.IsEntered(_queue));
            return _queue.Count;
        }
    }

    /// <inheritdoc />
    protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken)
    {
        ThrowHelper.CheckPermitCount(permitCount, _permitLimit, _settings.PermitCountName);
        ThrowIfDisposed();

        long now = _clock.Now();

        // The lock-free admission AttemptAcquire makes: a request that can pass now never takes the queue's lock.
        if (TryPassWithoutWaiting(now, permitCount))
        {
            return new ValueTask<RateLimitLease>(RateEngineLease.Acquired);
        }

        lock (_queue)
        {
            ThrowIfDisposed();
            if (RefuseToQueueLocked() is { } refusal)
            {
                return new ValueTask<RateLimitLease>(refusal);
            }

            // A queue whose wakeup is due but late is served first, as AttemptAcquire does: this request would otherwise be
            // refused as "queue full" (with a RETRY_AFTER of zero) or queued behind waiters whose permits are free.
            ServeOverdueQueueLocked();

            // The clock again: the lock may have taken a while (a long queue served under it), and a request decided on
            // the older read could be queued though its permits are free by now, with its wakeup armed late by as much.
            now = _clock.Now();
            if (TryPassWithoutWaiting(now, permitCount))
            {
                return new ValueTask<RateLimitLease>(RateEngineLease.Acquired);
            }

            // Subtraction, not addition: int.MaxValue-sized requests and queues must not wrap.
            int queueLimit = _settings.QueueLimit;
            if (queueLimit - _queuedPermits < permitCount)
            {
                if (_settings.Order == QueueProcessingOrder.NewestFirst && permitCount <= queueLimit)
                {
                    do
                    {
                        Complete(_queue.First!, RateEngineLease.Evicted);
                        _counters.Failed();
                    }
                    while (queueLimit - _queuedPermits < permitCount);
                }
                else
                {
                    _counters.Failed();
                    return new ValueTask<RateLimitLease>(Rejection(now, permitCount, ReasonPhrases.QueueFull));
                }
            }

            // The wakeup timer before the waiter is queued: a provider that throws then leaves no waiter behind that nobody
            // holds and that would block the queue.
            if (!_clock.IsManual)
            {
                _wakeup ??= CreateWakeup();
            }

            var waiter = new Waiter(this, permitCount);
            _queue.AddLast(waiter);
            Volatile.Write(ref _queuedPermits, _queuedPermits + permitCount);

            // A token cancelled by now runs the callback inline; the lock is re-entrant and the waiter is already queued.
            waiter.Registration = cancellationToken.UnsafeRegister(
                static (state, token) => ((Waiter)state!).Owner.Cancel((Waiter)state!, token), waiter);

            // A refund that freed permits after the attempt above may have read the queue as empty and left: with the
            // queued count published (full fence) and the state read again here, one of the two sees the other. Only a
            // waiter alone in the queue can have been missed (a refund that sees others queued serves the queue itself),
            // and only it is served here: waiters behind a servable head wait for a replenishment, as in-box.
            Interlocked.MemoryBarrier();
            try
            {
                now = _clock.Now();
                if (_queue.Count == 1 && _host.GetAvailablePermits(now) > 0)
                {
                    ServeQueueLocked();
                }
                else
                {
                    ScheduleWakeupLocked(now);
                }
            }
            catch when (waiter.Queued)
            {
                // A clock that throws fails the call: its waiter goes too, or nobody would hold it, no wake-up would be armed
                // for it, and it would keep every request behind it (and its partition key from eviction) for good.
                RemoveLocked(waiter);
                waiter.Registration.Unregister();
                throw;
            }

            return new ValueTask<RateLimitLease>(waiter.Task);
        }
    }

    /// <summary>
    /// Under the queue's lock, before a request that cannot pass is queued: a lease to answer instead, or null to queue
    /// it. A partition key being evicted answers so that the caller looks its key up again.
    /// </summary>
    private protected virtual RateLimitLease? RefuseToQueueLocked() => null;

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
            _counters.Succeeded();
            return true;
        }

        return false;
    }

    /// <summary>Disposal: the timer stops and every waiter gets a failed lease. Under the queue's lock.</summary>
    private void DisposeQueueLocked()
    {
        _wakeup?.Dispose();
        while (_queue.Count > 0)
        {
            Complete(ServiceHead()!, RateEngineLease.Disposed);
        }
    }

    private Waiter? ServiceHead() => _settings.Order == QueueProcessingOrder.OldestFirst ? _queue.First : _queue.Last;

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
                _counters.Succeeded();
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
        _wakeupRetryMilliseconds = 0; // served: the clock works again
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
        if (_wakeupArmed && _wakeupDue != 0 && _wakeupDue <= due) // 0: a retry after a failure (a real due is at least 1)
        {
            return;
        }

        // Marked armed only once the timer is set: a clock or timer that throws on the way must not leave a wake-up noted
        // that never comes, which the next waiter due no sooner would trust and arm nothing for.
        _wakeup ??= CreateWakeup();
        _wakeup.Change(WakeupDelay(_clock.ToRetryAfter(ticks)), Timeout.InfiniteTimeSpan); // after a step back, its catch-up too
        _wakeupArmed = true;
        Interlocked.Exchange(ref _wakeupDue, due); // whole, for the lock-free read (see WakeupDue)
        _wakeupRetryMilliseconds = 0; // the clock and the timer work again
    }

    /// <summary>
    /// Disposes the wake-up timer of a limiter whose queue is empty and will stay so (a partition key's limiter, retired by
    /// an eviction): a time provider that keeps its timers until they are disposed would otherwise keep one for every key
    /// that ever queued. A request that queues later makes a new one.
    /// </summary>
    private protected void ReleaseWakeup()
    {
        lock (_queue)
        {
            Debug.Assert(ServiceHead() is null, "a wake-up released under waiters");
            _wakeup?.Dispose();
            _wakeup = null;
            _wakeupArmed = false;
        }
    }

    /// <summary>
    /// The wakeup timer, made by the first request that queues: without that request's execution context, which a timer
    /// would otherwise keep (its async locals, its activity) for the limiter's whole life and run every wakeup under.
    /// </summary>
    private ITimer CreateWakeup() =>
        ContextFreeTimer.Create(_clock.Provider, static state => ((RateEngineLimiter)state!).OnWakeup(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);

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

    /// <summary>
    /// Serves the queue now if its wakeup is due and has not fired: timers fire late (a timer tick, 15.6 ms on Windows;
    /// longer on a busy pool), and a request that arrived meanwhile would otherwise be refused behind a queue whose permits
    /// are free, with a <c>RETRY_AFTER</c> of zero. Returns whether it served. Never for a manually replenished limiter,
    /// whose queue moves only when it is replenished.
    /// </summary>
    private bool ServeOverdueQueue()
    {
        // Read without the lock first: a refusal behind a queue whose wakeup is not due stays lock-free.
        if (_clock.IsManual || !Volatile.Read(ref _wakeupArmed) || _clock.Now() < WakeupDue)
        {
            return false;
        }

        lock (_queue)
        {
            return ServeOverdueQueueLocked();
        }
    }

    /// <summary>
    /// When the armed wake-up is due, read without the queue's lock: whole on a 32-bit process too, where a plain read of a
    /// long may see half of a write (the constant test folds away on 64-bit, where the read stays a plain load).
    /// </summary>
    private long WakeupDue => IntPtr.Size == 8 ? Volatile.Read(ref _wakeupDue) : Interlocked.Read(ref _wakeupDue);

    /// <summary><see cref="ServeOverdueQueue"/> under the queue's lock.</summary>
    private bool ServeOverdueQueueLocked()
    {
        if (!_wakeupArmed || _clock.Now() < _wakeupDue)
        {
            return false;
        }

        _wakeupArmed = false;
        try
        {
            ServeQueueLocked();
        }
        catch
        {
            KeepWakeupAfterFailureLocked();
            throw; // the request that served sees why
        }

        return true;
    }

    private void OnWakeup()
    {
        lock (_queue)
        {
            _wakeupArmed = false;
            try
            {
                ServeQueueLocked();
            }
            catch (Exception)
            {
                // A timer's thread has nobody to tell (on the pool the exception would end the process); the retry set
                // below serves the queue once the clock works again.
                KeepWakeupAfterFailureLocked();
            }
        }
    }

    /// <summary>
    /// After serving or arming the wake-up failed (a clock or timer that throws): leaves a wake-up behind, so that waiters
    /// are not left with none. It is noted as due already, so a request that finds the queue in its way serves it itself
    /// (one that may pass it, under <see cref="QueueProcessingOrder.NewestFirst"/>, does not), and the timer is asked to
    /// try again (best effort: it may be what failed) after 1 ms, then twice as long after each failure in a row, up to a
    /// second: a clock that stays broken costs a few tries, not a thousand a second. A clock that recovers is noticed by
    /// the next request, or by the retry up to a second later when none comes; a wake-up armed meanwhile replaces it.
    /// </summary>
    private void KeepWakeupAfterFailureLocked()
    {
        if (_wakeupArmed || _clock.IsManual || _disposed || ServiceHead() is null)
        {
            _wakeupRetryMilliseconds = _wakeupArmed ? _wakeupRetryMilliseconds : 0; // nothing waits: the next failure starts over
            return; // armed before the failure, or nothing to wake up for
        }

        const int MaxRetryMilliseconds = 1_000;
        _wakeupRetryMilliseconds = Math.Clamp(_wakeupRetryMilliseconds * 2, 1, MaxRetryMilliseconds);
        _wakeupArmed = true;
        Interlocked.Exchange(ref _wakeupDue, 0); // whole, for the lock-free read (see WakeupDue)
        try
        {
            _wakeup?.Change(TimeSpan.FromMilliseconds(_wakeupRetryMilliseconds), Timeout.InfiniteTimeSpan);
        }
        catch (Exception)
        {
            // Requests still serve the queue: the wake-up reads as due.
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

            // The cancelled waiter may have been the head of the line: the next one may be due sooner. A clock or timer that
            // fails here must not reach whoever cancelled (a timer's thread, for a timeout) nor leave the rest unserved.
            try
            {
                ScheduleWakeupLocked(_clock.Now());
            }
            catch (Exception)
            {
                KeepWakeupAfterFailureLocked();
            }
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
}
