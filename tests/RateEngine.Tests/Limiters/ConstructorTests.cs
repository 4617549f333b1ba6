using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Limiters;

/// <summary>
/// Construction, for every single limiter alike: null options and clocks, options out of range (both replenishment
/// modes where there are two), and the system clock by default. Parity with the in-box rules is in
/// <see cref="Parity.OptionsValidationParityTests"/>.
/// </summary>
public class ConstructorTests
{
    public static TheoryData<string> Limiters => new() { "log", "counter", "fixed", "bucket" };

    /// <summary>Each limiter's options out of range, one per rule, in both replenishment modes where it has two.</summary>
    public static TheoryData<string, object> InvalidOptions()
    {
        var data = new TheoryData<string, object>();
        foreach (var (permits, queue, window) in new[] { (0, 0, 10_000), (-1, 0, 10_000), (SlidingWindowLogRateLimiter.MaxPermitLimit + 1, 0, 10_000), (1, -1, 10_000), (1, 0, 0), (1, 0, -1) })
        {
            data.Add("log", new SlidingWindowLogRateLimiterOptions { PermitLimit = permits, QueueLimit = queue, Window = TimeSpan.FromMilliseconds(window) });
        }

        foreach (bool auto in new[] { true, false })
        {
            // A zero window is refused even when replenishment is manual, as the in-box limiters do.
            foreach (var (permits, segments, queue, windowTicks) in new[] { (0, 5, 0, 100_000_000L), (-1, 5, 0, 100_000_000L), (1, 0, 0, 100_000_000L), (1, -1, 0, 100_000_000L), (1, 5, -1, 100_000_000L), (1, 5, 0, 0L), (1, 5, 0, -1L), (1, 6, 0, 5L) })
            {
                data.Add("counter", new SlidingWindowCounterRateLimiterOptions
                {
                    PermitLimit = permits, SegmentsPerWindow = segments, QueueLimit = queue, Window = TimeSpan.FromTicks(windowTicks), AutoReplenishment = auto,
                });
            }

            foreach (var (permits, queue, window) in new[] { (0, 0, 10_000), (-1, 0, 10_000), (1, -1, 10_000), (1, 0, 0), (1, 0, -1) })
            {
                data.Add("fixed", new FixedWindowRateLimiterOptions
                {
                    PermitLimit = permits, QueueLimit = queue, Window = TimeSpan.FromMilliseconds(window), AutoReplenishment = auto,
                });
            }

            foreach (var (tokens, perPeriod, queue, period) in new[] { (0, 1, 0, 1_000), (-1, 1, 0, 1_000), (1, 0, 0, 1_000), (1, -1, 0, 1_000), (1, 1, -1, 1_000), (1, 1, 0, 0), (1, 1, 0, -1) })
            {
                data.Add("bucket", new TokenBucketRateLimiterOptions
                {
                    TokenLimit = tokens, TokensPerPeriod = perPeriod, QueueLimit = queue, ReplenishmentPeriod = TimeSpan.FromMilliseconds(period), AutoReplenishment = auto,
                });
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Limiters))]
    public void Ctor_NullOptions_ThrowsArgumentNullNamingThem(string limiter)
    {
        Assert.Equal("options", Assert.Throws<ArgumentNullException>(() => Create(limiter, null, null)).ParamName);
        Assert.Equal("options", Assert.Throws<ArgumentNullException>(() => Create(limiter, null, new FakeTimeProvider())).ParamName);
    }

    [Theory]
    [MemberData(nameof(Limiters))]
    public void Ctor_NullTimeProvider_ThrowsArgumentNullNamingIt(string limiter)
    {
        var ex = Assert.Throws<ArgumentNullException>(() => Create(limiter, OneAnHour(limiter), NullProvider));
        Assert.Equal("timeProvider", ex.ParamName);
    }

    [Theory]
    [MemberData(nameof(Limiters))]
    public void Ctor_TimeProviderWithoutFrequency_ThrowsArgumentOutOfRangeNamingIt(string limiter)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Create(limiter, OneAnHour(limiter), new NoFrequency()));
        Assert.Equal("timeProvider", ex.ParamName);

        // At a terahertz the clock's 2^61 ticks end within a month: every window would then stay where it is.
        ex = Assert.Throws<ArgumentOutOfRangeException>(() => Create(limiter, OneAnHour(limiter), new Terahertz()));
        Assert.Equal("timeProvider", ex.ParamName);
    }

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public void Ctor_OptionOutOfRange_ThrowsArgumentExceptionNamingTheOptions(string limiter, object options)
    {
        var ex = Assert.ThrowsAny<ArgumentException>(() => Create(limiter, options, new FakeTimeProvider()));
        Assert.Equal("options", ex.ParamName);
    }

    [Theory]
    [MemberData(nameof(Limiters))]
    public void Ctor_WithoutTimeProvider_UsesTheSystemClock(string limiter)
    {
        using RateLimiter created = Create(limiter, OneAnHour(limiter), null);

        Assert.True(created.AttemptAcquire(1).IsAcquired);
        Assert.False(created.AttemptAcquire(1).IsAcquired);
        Assert.True(((ReplenishingRateLimiter)created).IsAutoReplenishing);
    }

    /// <summary>Marks "pass null as the provider" apart from "use the overload without one".</summary>
    private static readonly TimeProvider NullProvider = new NoFrequency();

    /// <summary>The limiter from <paramref name="options"/>: without a provider when <paramref name="time"/> is null.</summary>
    private static RateLimiter Create(string limiter, object? options, TimeProvider? time)
    {
        TimeProvider? provider = ReferenceEquals(time, NullProvider) ? null : time;
        bool overload = time is not null;
        return limiter switch
        {
            "log" => overload
                ? new SlidingWindowLogRateLimiter((SlidingWindowLogRateLimiterOptions)options!, provider!)
                : new SlidingWindowLogRateLimiter((SlidingWindowLogRateLimiterOptions)options!),
            "counter" => overload
                ? new SlidingWindowCounterRateLimiter((SlidingWindowCounterRateLimiterOptions)options!, provider!)
                : new SlidingWindowCounterRateLimiter((SlidingWindowCounterRateLimiterOptions)options!),
            "fixed" => overload
                ? new LockFreeFixedWindowRateLimiter((FixedWindowRateLimiterOptions)options!, provider!)
                : new LockFreeFixedWindowRateLimiter((FixedWindowRateLimiterOptions)options!),
            _ => overload
                ? new LockFreeTokenBucketRateLimiter((TokenBucketRateLimiterOptions)options!, provider!)
                : new LockFreeTokenBucketRateLimiter((TokenBucketRateLimiterOptions)options!),
        };
    }

    /// <summary>Valid options: one permit an hour.</summary>
    private static object OneAnHour(string limiter) => limiter switch
    {
        "log" => new SlidingWindowLogRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromHours(1) },
        "counter" => new SlidingWindowCounterRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromHours(1), SegmentsPerWindow = 4 },
        "fixed" => new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromHours(1) },
        _ => new TokenBucketRateLimiterOptions { TokenLimit = 1, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromHours(1) },
    };

    /// <summary>A provider that counts a trillion ticks a second.</summary>
    private sealed class Terahertz : TimeProvider
    {
        public override long TimestampFrequency => 1_000_000_000_000;
    }

    /// <summary>A provider whose timestamps have no frequency: every duration computed from them would divide by zero.</summary>
    private sealed class NoFrequency : TimeProvider
    {
        public override long TimestampFrequency => 0;
    }
}
