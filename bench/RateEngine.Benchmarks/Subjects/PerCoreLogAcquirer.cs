using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>
/// One attempt on <c>SlidingWindowLogRateLimiter</c> with per-core blocks: the same call as <see cref="LogAcquirer"/>, in
/// a loop compiled for it alone, so that its profile is not the plain log's (see <see cref="IAcquirer"/>).
/// </summary>
internal readonly struct PerCoreLogAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.PerCoreLog;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<SlidingWindowLogRateLimiter>(limiter).AttemptAcquire(1);
}
