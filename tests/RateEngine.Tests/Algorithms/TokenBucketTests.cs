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

    [Theory]
    [InlineData((10L << 33) + 12_345)]
    [InlineData((10L << 33) - (1L << 29))] // 2^60 units short of a wrap: within the range a policy layer's bucket reads as debt
    public void GetAvailablePermits_IdleLongerThanTheUnitsWrap_ReadsAsFull(long idleTicks)
    {
        // 2^31 units per tick: the 64-bit units wrap every 2^33 ticks. Idle for many wraps, the bucket is full again.
        var bucket = new TokenBucket(1_000, int.MaxValue, periodTicks: 1, Stopped);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 5, 1_000, out _, out _));
        Assert.Equal(1_000, bucket.GetAvailablePermits(ref state, 5 + idleTicks));
        Assert.NotNull(bucket.GetFullSince(ref state, 5 + idleTicks));
        Assert.True(bucket.TryAcquire(ref state, 5 + idleTicks, 1_000, out _, out _));
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

    [Fact]
    public void TryAcquire_DrainedOntoTheFreshMarker_StaysDrained()
    {
        // An admission whose new state would be the fresh marker is moved one unit on, one past the burst: read as further
        // ahead than any state can be, it passed for a refilled bucket and admitted a second burst at once.
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped); // a unit a tick, a burst of 1,000
        long now = unchecked(long.MinValue - 1_000);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, now, 10, out _, out _));

        Assert.False(bucket.TryAcquire(ref state, now, 1, out _, out _));
        Assert.Equal(0, bucket.GetAvailablePermits(ref state, now));
    }

    [Fact]
    public void Charge_PastTheBurst_GoesIntoDebtAndRefusesUntilRepaid()
    {
        // 10 tokens of burst, one per 100 ticks: a token costs 100 units of one tick.
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped, takesCharges: true);
        long state = bucket.CreateState();
        Admission charge = bucket.Charge(ref state, 0, 25);

        Assert.Equal(new Admission(0, 25, 2_500, long.MinValue), charge);
        Assert.Equal(25, bucket.GetUsed(ref state, 0));
        Assert.Equal(0, bucket.GetAvailablePermits(ref state, 0));
        Assert.Null(bucket.GetFullSince(ref state, 0));
        Assert.Equal(2_500, bucket.GetResetAfter(ref state, 0));
        Assert.Equal(1_600, bucket.GetRetryAfter(ref state, 0, 1));
        Assert.False(bucket.TryAcquire(ref state, 0, 1, out _, out long retryAfter));
        Assert.Equal(1_600, retryAfter);

        Assert.Equal(10, bucket.GetUsed(ref state, 1_500));
        Assert.False(bucket.TryAcquire(ref state, 1_599, 1, out _, out _));
        Assert.True(bucket.TryAcquire(ref state, 1_600, 1, out _, out _));
        Assert.Equal(10, bucket.GetUsed(ref state, 1_600));
    }

    [Fact]
    public void Charge_DebtReadWithAStaleClock_IsKeptAndDecidedOnAFreshRead()
    {
        // A debt far past the burst looks like a stale read; the second clock read must keep it, not call it a refill.
        var time = new FakeTimeProvider();
        var clock = new LimiterClock(time);
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, clock, takesCharges: true);
        long state = bucket.CreateState();
        long staleRead = clock.Now();
        Assert.Equal(1_000, bucket.Charge(ref state, staleRead, 1_000).Permits);
        time.Advance(TimeSpan.FromTicks(50_000));
        long fresh = clock.Now();
        long stall = fresh - staleRead;
        Assert.True(stall > 1_000);

        long owed = 100_000 - stall;
        Assert.Equal((owed + 99) / 100, bucket.GetUsed(ref state, fresh));
        Assert.Equal((owed + 99) / 100, bucket.GetUsed(ref state, staleRead));
        Assert.Equal(0, bucket.GetAvailablePermits(ref state, staleRead));
        Assert.False(bucket.TryAcquire(ref state, staleRead, 1, out _, out long retryAfter));
        Assert.Equal(owed + 100 - 1_000 + stall, retryAfter);
        Assert.Equal(owed + stall, bucket.GetResetAfter(ref state, staleRead));
    }

    [Fact]
    public void Charge_BeyondTheDebtBound_IsClampedToWholeTokens()
    {
        var unitCost = new TokenBucket(tokenLimit: 3, tokensPerPeriod: 1, periodTicks: 1, Stopped, takesCharges: true);
        long state = unitCost.CreateState();
        Assert.True(unitCost.TryAcquire(ref state, 0, 2, out _, out _));
        Admission charge = unitCost.Charge(ref state, 0, long.MaxValue);

        Assert.Equal((1L << 61) + 1, charge.Permits); // the debt is 2^61 units past the burst of 3
        Assert.Equal((1L << 61) + 3, unitCost.GetUsed(ref state, 0));
        Assert.Equal(0, unitCost.Charge(ref state, 0, 5).Permits);
        Assert.Equal(TimeMath.MaxTicks, unitCost.GetResetAfter(ref state, 0));
        Assert.Equal(TimeMath.MaxTicks, unitCost.GetRetryAfter(ref state, 0, 1));
        Assert.Equal((1L << 60) + 3, unitCost.GetUsed(ref state, 1L << 60));

        var costly = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped, takesCharges: true);
        state = costly.CreateState();
        charge = costly.Charge(ref state, 7, long.MaxValue);
        Assert.Equal((1_000 + (1L << 61)) / 100, charge.Permits);
        Assert.Equal(charge.Permits, costly.GetUsed(ref state, 7));
        Assert.True(costly.Refund(ref state, charge, charge.Permits - 4));
        Assert.Equal(4, costly.GetUsed(ref state, 7));
    }

    [Fact]
    public void Refund_PartialNobodyAdmittedSince_IsAsIfFewerWereAdmitted()
    {
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped);
        long refunded = bucket.CreateState();
        long twin = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref refunded, 0, 3, out _, out _));
        Assert.True(bucket.TryAcquire(ref twin, 0, 3, out _, out _));
        Assert.True(bucket.TryAcquire(ref refunded, 250, 6, out Admission admission, out _));
        Assert.True(bucket.TryAcquire(ref twin, 250, 2, out _, out _));

        Assert.True(bucket.Refund(ref refunded, admission, 4));
        Assert.Equal(twin, refunded);
        Assert.Equal(bucket.GetUsed(ref twin, 300), bucket.GetUsed(ref refunded, 300));
    }

    [Fact]
    public void Refund_PartialAfterAnotherAdmission_FreesNothing()
    {
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, 5, out Admission first, out _));
        Assert.True(bucket.TryAcquire(ref state, 0, 1, out _, out _));
        Assert.False(bucket.Refund(ref state, first, 2));
        Assert.Equal(6, bucket.GetUsed(ref state, 0));
    }

    [Fact]
    public void Refund_PartialOfACharge_ReducesTheDebtAndOnlyOnce()
    {
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped, takesCharges: true);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, 4, out _, out _));
        Admission charge = bucket.Charge(ref state, 0, 30);
        Assert.True(bucket.Refund(ref state, charge, 12));
        Assert.Equal(22, bucket.GetUsed(ref state, 0));

        // The state moved (by the refund itself): the rest can no longer be undone exactly.
        Assert.False(bucket.Refund(ref state, charge, 18));
        Assert.Equal(22, bucket.GetUsed(ref state, 0));
    }

    [Fact]
    public void GetUsed_PartlyRefilled_RoundsUp()
    {
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped);
        long state = bucket.CreateState();
        Assert.Equal(0, bucket.GetUsed(ref state, 0));
        Assert.True(bucket.TryAcquire(ref state, 0, 10, out _, out _));

        Assert.Equal(9, bucket.GetUsed(ref state, 150)); // 8.5 tokens not yet back
        Assert.Equal(1, bucket.GetAvailablePermits(ref state, 150));
        Assert.Equal(1, bucket.GetUsed(ref state, 999));
        Assert.Equal(0, bucket.GetUsed(ref state, 1_000));
        Assert.Equal(0, bucket.GetUsed(ref state, 5_000));
    }

    [Fact]
    public void GetResetAfter_DrainedOrFull_IsUntilTatOrZero()
    {
        var bucket = new TokenBucket(tokenLimit: 10, tokensPerPeriod: 1, periodTicks: 100, Stopped);
        long state = bucket.CreateState();
        Assert.Equal(0, bucket.GetResetAfter(ref state, 0));
        Assert.True(bucket.TryAcquire(ref state, 0, 10, out _, out _));
        Assert.Equal(850, bucket.GetResetAfter(ref state, 150));
        Assert.Equal(0, bucket.GetResetAfter(ref state, 1_000));
    }

    [Fact]
    public void TryAcquire_LongPermitsUpToIntMaxValue_AdmitsTheWholeLimit()
    {
        var bucket = new TokenBucket(int.MaxValue, tokensPerPeriod: 1, periodTicks: 1_000, Stopped);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, (long)int.MaxValue, out Admission admission, out _));
        Assert.Equal(int.MaxValue, admission.Permits);
        Assert.Equal(int.MaxValue, bucket.GetUsed(ref state, 0));
        Assert.False(bucket.TryAcquire(ref state, 0, 1L, out _, out long retryAfter));
        Assert.Equal(1_000, retryAfter);
    }
}
