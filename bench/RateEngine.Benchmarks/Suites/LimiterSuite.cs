using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// What the single-threaded BenchmarkDotNet suites share: limiters per <see cref="LimiterKind"/> from <see cref="LimiterSetup"/>,
/// the measured calls, and the check that each benchmark took the path it claims (admit or reject). A benchmark that took
/// the wrong path even once fails in its global cleanup instead of reporting a number.
/// </summary>
public abstract class LimiterSuite
{
    private readonly RateLimiter?[] _admitting = new RateLimiter?[LimiterKinds.All.Length];
    private readonly RateLimiter?[] _exhausted = new RateLimiter?[LimiterKinds.All.Length];
    private readonly RateLimiter?[] _queueing = new RateLimiter?[LimiterKinds.All.Length];
    private readonly RateLimiter?[] _evicting = new RateLimiter?[LimiterKinds.All.Length];
    private readonly ValueTask<RateLimitLease>[] _pending = new ValueTask<RateLimitLease>[LimiterKinds.All.Length];
    private long _wrongPath;

    /// <summary>Queue capacity of the queueing limiters on the admit path: queueing is on, nobody waits.</summary>
    public const int QueueLimit = 64;

    private protected void SetUpAttempts(params LimiterKind[] kinds)
    {
        foreach (LimiterKind kind in kinds)
        {
            _admitting[(int)kind] = LimiterSetup.CreateAdmitting(kind);
            _exhausted[(int)kind] = LimiterSetup.CreateExhausted(kind);
        }
    }

    /// <summary>
    /// For <c>AcquireAsync</c>: an admitting limiter with a queue, and an exhausted one with a one-permit queue under
    /// <see cref="QueueProcessingOrder.NewestFirst"/>, already holding one waiter: each call then queues and evicts the
    /// previous waiter, which exercises the whole queue path (enqueue, registration, wake-up timer, completion) without waiting.
    /// </summary>
    private protected void SetUpQueueing(params LimiterKind[] kinds)
    {
        foreach (LimiterKind kind in kinds)
        {
            _queueing[(int)kind] = LimiterSetup.CreateAdmitting(kind, QueueLimit);
            RateLimiter evicting = LimiterSetup.CreateExhausted(kind, queueLimit: 1, QueueProcessingOrder.NewestFirst);
            _evicting[(int)kind] = evicting;
            _pending[(int)kind] = evicting.AcquireAsync(1);
            Check.That(!_pending[(int)kind].IsCompleted, $"{kind}: the first waiter was not queued");
        }
    }

    private protected void TearDown()
    {
        foreach (RateLimiter?[] limiters in new[] { _admitting, _exhausted, _queueing, _evicting })
        {
            for (int i = 0; i < limiters.Length; i++)
            {
                limiters[i]?.Dispose();
                limiters[i] = null;
            }
        }

        for (int i = 0; i < _pending.Length; i++)
        {
            // Disposing the limiter completed the last waiter; a default entry (kind not set up) holds null.
            if (_pending[i].IsCompleted && _pending[i].Result is { } lease)
            {
                lease.Dispose();
            }

            _pending[i] = default;
        }

        long wrong = Interlocked.Exchange(ref _wrongPath, 0);
        Check.That(wrong == 0, $"{GetType().Name}: {wrong} attempt(s) took the wrong path (admitted when it should reject or the reverse)");
    }

    /// <summary>One <c>AttemptAcquire(1)</c> + <c>Dispose</c> that must be admitted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected bool Admit<TAcquirer>()
        where TAcquirer : struct, IAcquirer =>
        Settle(TAcquirer.Acquire(_admitting[(int)TAcquirer.Kind]!), expectAcquired: true);

    /// <summary>One <c>AttemptAcquire(1)</c> + <c>Dispose</c> that must be rejected.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private protected bool Reject<TAcquirer>()
        where TAcquirer : struct, IAcquirer =>
        Settle(TAcquirer.Acquire(_exhausted[(int)TAcquirer.Kind]!), expectAcquired: false);

    /// <summary><c>AcquireAsync(1)</c> on a queueing limiter with permits free: must complete at once, admitted.</summary>
    private protected bool AcquireAsyncAdmit(LimiterKind kind)
    {
        ValueTask<RateLimitLease> task = _queueing[(int)kind]!.AcquireAsync(1);
        if (!task.IsCompletedSuccessfully)
        {
            _wrongPath++;
            return false;
        }

        return Settle(task.Result, expectAcquired: true);
    }

    /// <summary>
    /// <c>AcquireAsync(1)</c> on an exhausted limiter whose one-permit queue holds the previous call's waiter: the new
    /// request is queued and the previous one is evicted with a failed lease.
    /// </summary>
    private protected bool AcquireAsyncQueueEvict(LimiterKind kind)
    {
        ValueTask<RateLimitLease> next = _evicting[(int)kind]!.AcquireAsync(1);
        ValueTask<RateLimitLease> previous = _pending[(int)kind];
        _pending[(int)kind] = next;
        if (!previous.IsCompleted || next.IsCompleted)
        {
            _wrongPath++;
            return false;
        }

        return Settle(previous.Result, expectAcquired: false);
    }

    /// <summary>Disposes <paramref name="lease"/>, counts it if it took the other path, and returns whether it was acquired.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Settle(RateLimitLease lease, bool expectAcquired)
    {
        bool acquired = lease.IsAcquired;
        lease.Dispose();
        if (acquired != expectAcquired)
        {
            _wrongPath++;
        }

        return acquired;
    }
}
