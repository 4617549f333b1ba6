using System.Threading.RateLimiting;
using RateEngine.Limiters;

namespace RateEngine.Partitioning;

/// <summary>
/// The whole single-limiter contract (queue, order, cancellation, wake-ups) for one key that had to wait, running on
/// the key's entry state, so that the lock-free path and the queue see the same permits. Created only for keys that
/// queue; counts into the partitioned limiter's statistics.
/// </summary>
/// <remarks>
/// Eviction retires it first: with no waiters queued it stops accepting new ones, and a request that would have queued
/// gets <see cref="Retired"/> instead, which tells the partitioned limiter to look the key up again.
/// </remarks>
internal sealed class PartitionKeyLimiter : RateEngineLimiter
{
    /// <summary>The answer of a retired key's limiter to a request that would queue. Never reaches a caller.</summary>
    public static readonly RateLimitLease Retired = RateEngineLease.Refused(ReasonPhrases.Disposed);

    private bool _retired;

    public PartitionKeyLimiter(LimiterParts parts, object tier)
        : base(parts)
    {
        Tier = tier;
    }

    public object Tier { get; }

    /// <summary>Stops accepting waiters if none are queued. Returns false when waiters exist (the key is not idle).</summary>
    public bool TryRetire()
    {
        lock (QueueLock)
        {
            _retired = WaiterCount == 0;
            return _retired;
        }
    }

    /// <summary>Once the eviction <see cref="TryRetire"/> prepared has happened: the limiter is never queued on again.</summary>
    public void Evicted() => ReleaseWakeup();

    /// <summary>Undoes <see cref="TryRetire"/> when the eviction it prepared does not happen.</summary>
    public void Unretire()
    {
        lock (QueueLock)
        {
            _retired = false;
        }
    }

    private protected override RateLimitLease? RefuseToQueueLocked() => _retired ? Retired : null;
}
