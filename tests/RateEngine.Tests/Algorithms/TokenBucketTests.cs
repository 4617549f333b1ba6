using RateEngine.Algorithms;

namespace RateEngine.Tests.Algorithms;

public class TokenBucketTests
{
    [Fact]
    public void Constructor_RateNotAWholeNumberOfTicks_RoundsTheRateDownNeverUp()
    {
        // 3 tokens per 10 ticks with no room to scale exactly: the 3.33-tick interval rounds up to 4, never down.
        var bucket = new TokenBucket(tokenLimit: 1, tokensPerPeriod: 3, periodTicks: 10, horizonTicks: long.MaxValue / 4);
        long state = bucket.CreateState();
        int admitted = 0;
        for (long now = 0; now < 10_000; now++)
        {
            admitted += bucket.TryAcquire(ref state, now, 1, out _, out _) ? 1 : 0;
        }

        Assert.InRange(admitted, 2_500, 3_001);
    }

    [Fact]
    public void PermitLimit_BurstThatTakesDecadesToFill_IsCappedToWhatTheBucketCanHold()
    {
        var bucket = new TokenBucket(tokenLimit: int.MaxValue, tokensPerPeriod: 1, periodTicks: long.MaxValue / 8, horizonTicks: 1);
        Assert.True(bucket.PermitLimit < int.MaxValue);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, (int)bucket.PermitLimit, out _, out _));
    }

    [Fact]
    public void Refund_SomeoneAdmittedSince_KeepsTheTokensSpent()
    {
        var bucket = new TokenBucket(tokenLimit: 2, tokensPerPeriod: 1, periodTicks: 100, horizonTicks: 1_000_000);
        long state = bucket.CreateState();
        Assert.True(bucket.TryAcquire(ref state, 0, 1, out Admission first, out _));
        Assert.True(bucket.TryAcquire(ref state, 0, 1, out _, out _));
        Assert.False(bucket.Refund(ref state, first));
        Assert.Equal(0, bucket.GetAvailablePermits(ref state, 0));
    }
}
