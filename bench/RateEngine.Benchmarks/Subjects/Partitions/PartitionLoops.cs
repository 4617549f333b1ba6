using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The measured partition loops, one compiled copy per key type and <see cref="IPartitionTag"/>.</summary>
internal static class PartitionLoops
{
    /// <summary>One <c>AttemptAcquire(key)</c> + <c>Dispose</c> per key of <paramref name="keys"/>[start..end); returns the admissions.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Touch<TKey, TTag>(PartitionedRateLimiter<TKey> limiter, TKey[] keys, int start, int end)
        where TKey : notnull
        where TTag : struct, IPartitionTag
    {
        long acquired = 0;
        for (int i = start; i < end; i++)
        {
            RateLimitLease lease = limiter.AttemptAcquire(keys[i]);
            if (lease.IsAcquired)
            {
                acquired++;
            }

            lease.Dispose();
        }

        return acquired;
    }

    /// <summary>
    /// <paramref name="count"/> attempts on keys picked by <paramref name="order"/> (a power-of-two long list of indices
    /// into <paramref name="keys"/>) from position <paramref name="cursor"/> on; returns the admissions.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long Hot<TKey, TTag>(PartitionedRateLimiter<TKey> limiter, TKey[] keys, int[] order, ref int cursor, long count)
        where TKey : notnull
        where TTag : struct, IPartitionTag
    {
        long acquired = 0;
        int mask = order.Length - 1;
        int position = cursor;
        for (long i = 0; i < count; i++)
        {
            RateLimitLease lease = limiter.AttemptAcquire(keys[order[position]]);
            position = (position + 1) & mask;
            if (lease.IsAcquired)
            {
                acquired++;
            }

            lease.Dispose();
        }

        cursor = position;
        return acquired;
    }
}
