using System.Diagnostics;
using System.Reflection;
using System.Threading.RateLimiting;

namespace RateEngine.Tests.Parity;

/// <summary>
/// Drives an in-box limiter's manual replenishment on a synthetic clock. The in-box limiters read
/// <see cref="Stopwatch"/> directly, so, like dotnet/runtime's own tests, we call their private
/// <c>ReplenishInternal(long)</c> with a timestamp we control; that is the whole of what <c>TryReplenish</c> does.
/// </summary>
public sealed class InBoxDriver
{
    private readonly ReplenishingRateLimiter _limiter;
    private readonly MethodInfo _replenish;
    private long _now;

    public InBoxDriver(ReplenishingRateLimiter limiter)
    {
        _limiter = limiter;
        Type type = limiter.GetType();
        _replenish = type.GetMethod("ReplenishInternal", BindingFlags.NonPublic | BindingFlags.Instance)
            ?? throw new InvalidOperationException($"{type.Name}.ReplenishInternal(long) is gone: the parity tests need a new way to drive time.");
        FieldInfo last = type.GetField("_lastReplenishmentTick", BindingFlags.NonPublic | BindingFlags.Instance)
            ?? throw new InvalidOperationException($"{type.Name}._lastReplenishmentTick is gone.");
        _now = (long)last.GetValue(limiter)!;
    }

    /// <summary>Moves the synthetic clock by <paramref name="elapsed"/>, then replenishes as <c>TryReplenish</c> would.</summary>
    public void Replenish(TimeSpan elapsed)
    {
        _now += (long)((Int128)elapsed.Ticks * Stopwatch.Frequency / TimeSpan.TicksPerSecond);
        _replenish.Invoke(_limiter, [_now]);
    }
}
