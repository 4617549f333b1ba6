using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>One attempt on <c>SlidingWindowCounterRateLimiter</c>, called through its own type (see <see cref="IAcquirer"/>).</summary>
internal readonly struct CounterAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.Counter;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<SlidingWindowCounterRateLimiter>(limiter).AttemptAcquire(1);
}
