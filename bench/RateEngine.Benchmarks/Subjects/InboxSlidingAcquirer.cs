using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>One attempt on the in-box <c>SlidingWindowRateLimiter</c>, called through its own type (see <see cref="IAcquirer"/>).</summary>
internal readonly struct InboxSlidingAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.InboxSliding;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<SlidingWindowRateLimiter>(limiter).AttemptAcquire(1);
}
