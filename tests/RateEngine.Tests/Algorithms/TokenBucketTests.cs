using Microsoft.Extensions.Time.Testing;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Tests.Algorithms;

public class TokenBucketTests
{
    /// <summary>Tokens per second the clock's ticks (1 GHz, as <c>Stopwatch</c> on Linux) make of a bucket's rate.</summary>
    private const long Second = 1_000_000_000;

    /// <summary>
    /// A clock standing at 0 for tests that pass times of their own: the bucket reads its clock only for a state further
    /// ahead than a burst, and then never decides earlier than the time it was given.
    /// </summary>
    private static readonly LimiterClock Stopped = new(new FakeTimeProvider());

    [Theory]
    [InlineData(3, 10)] // 3.33 ticks per token
    [InlineData(1L << 30, Second)] // 1 GiB/s
    [InlineData(100L << 20, Second)] // 100 MiB/s
    [InlineData(int.MaxValue, Second / 1_000)] // int.MaxValue per millisecond
    [InlineData(int.MaxValue, 1)] // int.MaxValue per tick, the fastest the options allow
    [InlineData(1_000_003, 999_999_937)] // coprime, neither exact nor simple
    [InlineData(7, Second * 86_400 * 30)] // 7 per 30 days
    [InlineData(1, long.MaxValue / 4)] // one per 73 years
    public void Rate_AnyOptions_IsExactOrBelowByLessThanOnePartInAMillion(long tokensPerPeriod, long periodTicks)
    {
        var bucket = new TokenBucket(int.MaxValue, tokensPerPeriod, periodTicks, Stopped);
        (long units, long ticks, long cost) = bucket.Rate;

        // Tokens per tick: units / (ticks * cost) against tokensPerPeriod / periodTicks, compared exactly.
        Int128 configured = (Int128)tokensPerPeriod * ticks * cost;
        Int128 actual = (Int128)units * periodTicks;
        Assert.True(actual <= configured, "the bucket refills faster than configured");
        Assert.True((double)(configured - actual) / (double)configured < 1e-6, $"rate off by {(double)(configured - actual) / (double)configured}");
    }

    [Theory]
    [InlineData(1L << 30, Second)]
    [InlineData(100L << 20, Second)]
    [InlineData(int.MaxValue, Second / 1_000)]
    [InlineData(1_000_003, 999_999_937)]
    public void TryAcquire_DrainedAtEveryStep_RefillsAtTheConfiguredRate(long tokensPerPeriod, long periodTicks)
    {
        // Steps shorter than half a full refill, so the bucket never overflows and everything it refills is taken.
        const int Steps = 1_000;
        var bucket = new TokenBucket(int.MaxValue, tokensPerPeriod, periodTicks, Stopped);
        long step = (long)Math.Min((double)periodTicks * (int.MaxValue / 2) / tokensPerPeriod, periodTicks * 1_000.0);
        long state = bucket.CreateState();
        Int128 taken = 0;
        for (long i = 0; i <= Steps; i++)
        {
            long now = i * step;
            long available = bucket.GetAvailablePermits(ref state, now);
            if (available > 0)
            {
                Assert.True(bucket.TryAcquire(ref state, now, (int)available, out _, out _));
                taken += available;
            }

            Assert.False(bucket.TryAcquire(ref state, now, 1, out _, out _));
        }

        double expected = (double)tokensPerPeriod * Steps * step / periodTicks;
        Assert.InRange((double)(taken - int.MaxValue) / expected, 1 - 1e-6, 1 + 1e-12);
    }

    [Fact]
    public void PermitLimit_ThousandTokensAtOnePerThirtyDays_IsTheWholeLimitAndAFreshBucketGivesIt()
    {
        // 1,000 tokens at one per 30 days take 82 years to fill: more than a 64-bit count of nanoseconds can hold at 2^61.
        var bucket = new TokenBucket(tokenLimit: 1_000, tokensPerPeriod: 1, periodTicks: Second * 86_400 * 30, Stopped);
        Assert.Equal(1_000, bucket.PermitLimit);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, 1_000, out _, out _));
        Assert.False(bucket.TryAcquire(ref state, Second * 86_400 * 29, 1, out _, out _));
        Assert.True(bucket.TryAcquire(ref state, (Second * 86_400 * 30) + (Second * 3), 1, out _, out _)); // 30 days, less than 1e-6 slower
    }

    [Fact]
    public void GetRetryAfter_IntMaxValuePerMillisecond_WholeLimitIsBackAfterOnePeriod()
    {
        var bucket = new TokenBucket(int.MaxValue, int.MaxValue, periodTicks: Second / 1_000, Stopped);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, int.MaxValue, out _, out _));
        Assert.Equal(Second / 1_000, bucket.GetRetryAfter(ref state, 0, int.MaxValue));
        Assert.True(bucket.TryAcquire(ref state, Second / 1_000, int.MaxValue, out _, out _));
    }

    [Fact]
    public void GetAvailablePermits_IdleLongerThanTheUnitsWrap_ReadsAsFull()
    {
        // 2^31 units per tick: the 64-bit units wrap every 2^33 ticks. Idle for many wraps, the bucket is full again.
        var bucket = new TokenBucket(1_000, int.MaxValue, periodTicks: 1, Stopped);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 5, 1_000, out _, out _));
        Assert.Equal(1_000, bucket.GetAvailablePermits(ref state, 5 + (10L << 33) + 12_345));
        Assert.NotNull(bucket.GetFullSince(ref state, 5 + (10L << 33) + 12_345));
    }

    [Theory]
    [InlineData((1L << 33) + (1L << 31))] // the stale read's units wrap to far ahead of the bucket
    [InlineData((1L << 33) + (1L << 32))] // ... to far behind it
    [InlineData(10_000_000_000)]
    public void TryAcquire_StaleClockReadAcrossAWrap_DecidesOnAFreshReadAndIsRejected(long stallTicks)
    {
        // A thread that read the clock, then stalled while another drained the bucket: at 2^31 units per tick the
        // 64-bit units wrap every 2^33 ticks, so its old read can look like any time at all. It must not see a refill.
        var time = new FakeTimeProvider();
        var clock = new LimiterClock(time);
        var bucket = new TokenBucket(tokenLimit: 1_000, tokensPerPeriod: int.MaxValue, periodTicks: 1_000_000, clock);
        long state = bucket.CreateState();
        long staleRead = clock.Now();
        time.Advance(TimeSpan.FromTicks(stallTicks));
        Assert.True(bucket.TryAcquire(ref state, clock.Now(), 1_000, out _, out _));

        Assert.False(bucket.TryAcquire(ref state, staleRead, 1, out _, out long retryAfter));
        Assert.InRange(retryAfter, stallTicks, stallTicks + 1_000);
        Assert.Equal(0, bucket.GetAvailablePermits(ref state, staleRead));
        Assert.Null(bucket.GetFullSince(ref state, staleRead));
    }

    [Fact]
    public void Refund_SomeoneAdmittedSince_KeepsTheTokensSpent()
    {
        var bucket = new TokenBucket(tokenLimit: 2, tokensPerPeriod: 1, periodTicks: 100, Stopped);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, 1, out Admission first, out _));
        Assert.True(bucket.TryAcquire(ref state, 0, 1, out _, out _));
        Assert.False(bucket.Refund(ref state, first));
        Assert.Equal(0, bucket.GetAvailablePermits(ref state, 0));
    }
}
