using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>One attempt on the in-box <c>TokenBucketRateLimiter</c>, called through its own type (see <see cref="IAcquirer"/>).</summary>
internal readonly struct InboxBucketAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.InboxBucket;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<TokenBucketRateLimiter>(limiter).AttemptAcquire(1);
}
