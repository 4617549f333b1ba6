using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>One attempt on <c>LockFreeTokenBucketRateLimiter</c>, called through its own type (see <see cref="IAcquirer"/>).</summary>
internal readonly struct LockFreeBucketAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.LockFreeBucket;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<LockFreeTokenBucketRateLimiter>(limiter).AttemptAcquire(1);
}
