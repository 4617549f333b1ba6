using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>One attempt on <c>LockFreeFixedWindowRateLimiter</c>, called through its own type (see <see cref="IAcquirer"/>).</summary>
internal readonly struct LockFreeFixedAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.LockFreeFixed;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<LockFreeFixedWindowRateLimiter>(limiter).AttemptAcquire(1);
}
