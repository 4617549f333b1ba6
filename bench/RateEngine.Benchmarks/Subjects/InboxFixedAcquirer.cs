using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>One attempt on the in-box <c>FixedWindowRateLimiter</c>, called through its own type (see <see cref="IAcquirer"/>).</summary>
internal readonly struct InboxFixedAcquirer : IAcquirer
{
    public static LimiterKind Kind => LimiterKind.InboxFixed;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RateLimitLease Acquire(RateLimiter limiter) => Unsafe.As<FixedWindowRateLimiter>(limiter).AttemptAcquire(1);
}
