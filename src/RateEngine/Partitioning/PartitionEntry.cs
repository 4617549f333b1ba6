using System.Threading.RateLimiting;
using RateEngine.Algorithms;

namespace RateEngine.Partitioning;

/// <summary>
/// One key's state: the algorithm state itself (a single <c>long</c> for the fixed window and the token bucket) and
/// one link that says what else the key has. 32 bytes for the one-word algorithms.
/// </summary>
internal sealed class PartitionEntry<TState>
{
    /// <summary>Marks an entry that eviction removed: whoever holds it looks the key up again.</summary>
    public static readonly object Evicted = new();

    public TState State = default!;

    /// <summary>
    /// The key's <see cref="PartitionTier{TAlgorithm,TState}"/>; or, once the key has had to queue, its
    /// <see cref="PartitionKeyLimiter"/>; or <see cref="Evicted"/>.
    /// </summary>
    public object Link = null!;
}

/// <summary>
/// The shared, immutable settings of every key that resolves to the same options: its algorithm and queue settings.
/// Tiers are few; entries point at theirs.
/// </summary>
internal sealed class PartitionTier<TAlgorithm, TState>(
    TAlgorithm algorithm, int queueLimit, QueueProcessingOrder order, TimeSpan replenishmentPeriod, string permitCountName)
    where TAlgorithm : struct, IRateAlgorithm<TState>
{
    public readonly TAlgorithm Algorithm = algorithm;
    public readonly int QueueLimit = queueLimit;
    public readonly QueueProcessingOrder Order = order;
    public readonly TimeSpan ReplenishmentPeriod = replenishmentPeriod;
    public readonly string PermitCountName = permitCountName;
}

/// <summary>
/// The whole single-limiter contract (queue, order, cancellation, wake-ups) for one key that had to wait, running on
/// the key's entry state, so that the lock-free path and the queue see the same permits. Created only for keys that
/// queue; counts into the partitioned limiter's statistics.
/// </summary>
internal sealed class PartitionKeyLimiter : RateEngineLimiter
{
    public PartitionKeyLimiter(LimiterParts parts, object tier)
        : base(parts)
    {
        Tier = tier;
    }

    public object Tier { get; }
}

/// <summary>An <see cref="AlgorithmHost"/> over a partition entry's state.</summary>
internal sealed class EntryHost<TAlgorithm, TState>(TAlgorithm algorithm, PartitionEntry<TState> entry) : AlgorithmHost
    where TAlgorithm : struct, IRateAlgorithm<TState>
{
    private readonly TAlgorithm _algorithm = algorithm;

    public override long PermitLimit => _algorithm.PermitLimit;

    public override bool TryAcquire(long now, int permits, out Admission admission, out long retryAfter) =>
        _algorithm.TryAcquire(ref entry.State, now, permits, out admission, out retryAfter);

    public override bool Refund(in Admission admission) => _algorithm.Refund(ref entry.State, admission);

    public override long GetAvailablePermits(long now) => _algorithm.GetAvailablePermits(ref entry.State, now);

    public override long GetRetryAfter(long now, long permits) => _algorithm.GetRetryAfter(ref entry.State, now, permits);

    public override long? GetFullSince(long now) => _algorithm.GetFullSince(ref entry.State, now);

    public override long RefillTicks => _algorithm.RefillTicks;
}
