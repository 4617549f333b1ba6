using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>One attempt on <c>SlidingWindowLogRateLimiter</c>, called through its own type (see <see cref="IAcquirer"/>).</summary>
internal readonly struct LogAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.Log;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<SlidingWindowLogRateLimiter>(limiter).AttemptAcquire(1);
}
