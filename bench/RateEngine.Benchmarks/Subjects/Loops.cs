using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>The measured loops, one compiled copy per <see cref="IAcquirer"/>.</summary>
internal static class Loops
{
    /// <summary><paramref name="count"/> attempts, each disposed; returns how many were admitted.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Attempt<TAcquirer>(RateLimiter limiter, long count)
        where TAcquirer : struct, IAcquirer
    {
        long acquired = 0;
        for (long i = 0; i < count; i++)
        {
            RateLimitLease lease = TAcquirer.Acquire(limiter);
            if (lease.IsAcquired)
            {
                acquired++;
            }

            lease.Dispose();
        }

        return acquired;
    }

    /// <summary>The ceiling: <paramref name="count"/> bare increments of one shared counter.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Increment(SharedCounter counter, long count)
    {
        for (long i = 0; i < count; i++)
        {
            Interlocked.Increment(ref counter.Value);
        }

        return count;
    }

    /// <summary>The loop for <paramref name="kind"/>, as a delegate (called once per batch, so its cost is amortized).</summary>
    public static Func<RateLimiter, long, long> For(LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding => Attempt<InboxSlidingAcquirer>,
        LimiterKind.Log => Attempt<LogAcquirer>,
        LimiterKind.PerCoreLog => Attempt<PerCoreLogAcquirer>,
        LimiterKind.Counter => Attempt<CounterAcquirer>,
        LimiterKind.InboxFixed => Attempt<InboxFixedAcquirer>,
        LimiterKind.LockFreeFixed => Attempt<LockFreeFixedAcquirer>,
        LimiterKind.InboxBucket => Attempt<InboxBucketAcquirer>,
        LimiterKind.LockFreeBucket => Attempt<LockFreeBucketAcquirer>,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };
}
