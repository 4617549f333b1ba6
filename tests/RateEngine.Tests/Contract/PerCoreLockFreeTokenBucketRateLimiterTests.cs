using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Limiters;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeTokenBucketRateLimiter"/> with per-core blocks (<see cref="PerCoreReservationOptions"/>).
/// </summary>
public sealed class PerCoreLockFreeTokenBucketRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override string OverLimitParamName => "tokenCount";

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new LockFreeTokenBucketRateLimiter(
            LockFreeTokenBucketRateLimiterTests.Options(permitLimit, permitLimit, Window, queueLimit, order, autoReplenishment: true),
            new PerCoreReservationOptions(),
            time);

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window * 2);

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) =>
        LockFreeTokenBucketRateLimiterTests.TimeForTokens(permitLimit, permits, elapsed);

    [Fact]
    public void AttemptAcquire_ManySmallRequestsAtOneInstant_AdmitExactlyTheBurst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);

        int admitted = AdmitOneAtATime(limiter);

        // At one instant every block's tokens are within their slots: the whole burst is admitted, not one more.
        Assert.Equal(1_000, admitted);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_BlockTokenPastItsSlot_IsNeverUsed()
    {
        // 1,000 tokens per 10 s: one every 10 ms. From a full bucket a block's token j may be used until j * 10 ms after it
        // was taken; a minute later the bucket is full again, and the old blocks' tokens must not add to its burst.
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1_000, 0, QueueProcessingOrder.OldestFirst, time);
        for (int i = 0; i < 200; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        time.Advance(TimeSpan.FromMinutes(1));
        int admitted = AdmitOneAtATime(limiter);

        Assert.Equal(1_000, admitted);
    }

    [Fact]
    public void AttemptAcquire_CoresSlowerThanTheRefill_KeepTheirBlocksAndSetAtMostA64thOfTheBurstAside()
    {
        // 64,000 tokens per 10 s: one every 156.25 µs. Two cores take turns, one request every 200 µs between them, so each
        // uses a token every 400 µs, 2.56 times slower than the refill. A block taken from the full bucket at its own time
        // would let token j live only j * 156.25 µs: the cores would lose most of every block, and the blocks would halve
        // to none. With its slots a lead ahead a block lasts; the lead is tokens the full bucket would have dropped anyway,
        // at most 1/64 of the burst (1,000 tokens).
        const int Burst = 64_000;
        using var bucket = new SteeredBucket(Burst, stripes: 2);
        (FakeTimeProvider time, LockFreeTokenBucketRateLimiter limiter, PerCoreBucketHost host) = (bucket.Time, bucket.Limiter, bucket.Host);
        int heldAfterWarmUp = 0;
        for (int i = 0; i < 2_000; i++)
        {
            bucket.Core = i & 1;
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);

            // Without blocks the bucket would read one short just after a take.
            Assert.InRange(limiter.GetStatistics()!.CurrentAvailablePermits, Burst - 1 - (Burst / 64) - 1, Burst);
            if (i >= 400 && host.HeldInBlocks(limiter.Clock.Now()) > 0)
            {
                heldAfterWarmUp++;
            }

            time.Advance(TimeSpan.FromMicroseconds(200));
        }

        // Blocks start once a core's pace is known (its first blocks, taken without one, expire), by the 300th request;
        // after that the blocks run dry together only at the step, once per 64 requests of a core, when both refill.
        Assert.InRange(heldAfterWarmUp, 1_550, 1_600);
    }

    [Fact]
    public void AttemptAcquire_LeadBlockTokenPastItsSlot_IsNeverUsed()
    {
        // Blocks taken a lead ahead (as above), then time in steps shorter than a token until the bucket is full again:
        // then every block token's slot has just passed, so once a third core takes the whole burst, no block may add a
        // token to it (a refused request looks at every block).
        const int Burst = 64_000;
        using var bucket = new SteeredBucket(Burst, stripes: 4);
        (FakeTimeProvider time, LockFreeTokenBucketRateLimiter limiter, PerCoreBucketHost host) = (bucket.Time, bucket.Limiter, bucket.Host);
        for (int i = 0; i < 1_001; i++)
        {
            bucket.Core = i & 1;
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
            time.Advance(TimeSpan.FromMicroseconds(200));
        }

        Assert.True(host.HeldInBlocks(limiter.Clock.Now()) > 0);
        for (int step = 0; limiter.IdleDuration is null; step++)
        {
            Assert.True(step < 10_000, "the bucket never filled up again");
            time.Advance(TimeSpan.FromMicroseconds(100));
        }

        bucket.Core = 2;
        Assert.True(limiter.AttemptAcquire(Burst).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_CoresMuchSlowerThanTheRefill_SetAtMostA64thOfTheBurstAside()
    {
        // 6,400 tokens per 10 s: one every 1.5625 ms; a lead is at most 100 tokens (156.25 ms). Two cores take turns every
        // 5 ms, each 6.4 times slower than the refill: a block of 64 would need a lead of about 820 tokens, so the cores
        // get blocks of the size whose lead fits the cap, and the bucket never reads more than the cap below full.
        const int Burst = 6_400;
        using var bucket = new SteeredBucket(Burst, stripes: 2);
        (FakeTimeProvider time, LockFreeTokenBucketRateLimiter limiter, PerCoreBucketHost host) = (bucket.Time, bucket.Limiter, bucket.Host);
        long lowest = Burst;
        int heldAfterWarmUp = 0;
        for (int i = 0; i < 2_000; i++)
        {
            bucket.Core = i & 1;
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
            lowest = Math.Min(lowest, limiter.GetStatistics()!.CurrentAvailablePermits);
            if (i >= 400 && host.HeldInBlocks(limiter.Clock.Now()) > 0)
            {
                heldAfterWarmUp++;
            }

            time.Advance(TimeSpan.FromMilliseconds(5));
        }

        Assert.InRange(lowest, Burst - 1 - (Burst / 64) - 1, Burst);
        Assert.True(heldAfterWarmUp > 800, $"blocks held tokens at {heldAfterWarmUp} of 1,600 steps");
    }

    [Theory]
    [InlineData(5, true, 2)]
    [InlineData(6, true, 1)]
    [InlineData(7, true, 0)]
    [InlineData(8, false, 7)]
    public void AttemptAcquire_WeightedRequestLargerThanTheHomeBlock_LosesNoToken(int tokens, bool fits, int left)
    {
        // Three single tokens at one instant leave the core's block two of the three it took beyond its requests (the
        // bucket counted them): 7 available, 5 in the shared bucket and 2 in the block. A request larger than the block
        // takes the block's 2 and the rest from the shared bucket, as the bucket alone would admit any request up to 7; one
        // of 8 is refused and leaves both as they were. Dropping the block's tokens lost 2 on every such request.
        using var bucket = new SteeredBucket(10, stripes: 1);
        LockFreeTokenBucketRateLimiter limiter = bucket.Limiter;
        for (int i = 0; i < 3; i++)
        {
            Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        }

        Assert.Equal(7, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.Equal(2, bucket.Host.HeldInBlocks(limiter.Clock.Now()));

        Assert.Equal(fits, limiter.AttemptAcquire(tokens).IsAcquired);

        Assert.Equal(left, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.Equal(left, AdmitOneAtATime(limiter));
    }

    [Fact]
    public void AttemptAcquire_WeightedRequestsAtOneInstant_AdmitExactlyTheBurst()
    {
        // Requests of 5 tokens on one core: its blocks hold whatever the sizing gave them (often not a multiple of 5), and a
        // block's leftover joins the next request with the rest from the shared bucket, so the whole burst is used. Dropped
        // leftovers lost tokens at every refill; leftovers kept but never joined held tokens no request of 5 could use.
        // (With several cores a request takes from one block only: each may keep up to 4 tokens, the documented slack.)
        using var bucket = new SteeredBucket(1_000, stripes: 1);
        int admitted = 0;
        for (int i = 0; i < 400; i++)
        {
            admitted += bucket.Limiter.AttemptAcquire(5).IsAcquired ? 1 : 0;
        }

        Assert.Equal(200, admitted);
        Assert.Equal(0, bucket.Limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void TryAcquire_StaleCallerJoiningItsBlocksLeftover_NeverUsesATokenPastItsSlot()
    {
        // A caller whose clock read is stale: the shared bucket decides at a fresh read, later than the one the caller
        // judged its block's leftover at. The leftover token's slot ended at T + 3 token intervals; used at T + 6 with a
        // shared token, the bucket would have given 11 tokens at one stamp against a burst of 10 (found by review).
        using var bucket = new SteeredBucket(10, stripes: 2);
        (PerCoreBucketHost host, long stale) = LeftoverOnCoreZeroThenCoreOneTakes(bucket, 9);

        bucket.Core = 0;
        Assert.False(host.TryAcquire(stale, 2, out _, out long retryAfter));
        Assert.True(retryAfter > 0);
    }

    [Fact]
    public void TryAcquire_StaleCallerWhoseLeftoverExpired_TakesItsWholeCountFromTheBucket()
    {
        // As above, but the bucket is full again when the stale caller comes: its block's leftover is past its slot at the
        // bucket's fresh stamp, so the request takes both tokens from what the bucket gave, and the rest become its block.
        // Publishing every given token to the block instead lost one (a block's first token is past its slot at its own
        // stamp): 7 left where a fresh caller leaves 8 (found by review).
        using var bucket = new SteeredBucket(10, stripes: 2);
        (PerCoreBucketHost host, long stale) = LeftoverOnCoreZeroThenCoreOneTakes(bucket, 10);
        bucket.Time.Advance(Window); // full again

        bucket.Core = 0;
        Assert.True(host.TryAcquire(stale, 2, out _, out _));
        Assert.Equal(8, host.GetAvailablePermits(bucket.Limiter.Clock.Now()));
    }

    [Fact]
    public void TryAcquire_StaleCallersLargeRequestWhoseLeftoverExpired_LeavesItsCoresBlockUsable()
    {
        // The stale caller's case above with a request of more than 2^21 tokens that the bucket's tokens alone do not cover:
        // they all go to the core's block, whose word holds 21 bits of remaining tokens. Written unclamped, the count ran
        // into the word's closed bit, and the core's block stayed closed for good (found by review).
        using var bucket = new SteeredBucket(1 << 23, stripes: 2);
        (PerCoreBucketHost host, long stale) = LeftoverOnCoreZeroThenCoreOneTakes(bucket, 1 << 22);
        bucket.Time.Advance(Window); // full again

        bucket.Core = 0;
        host.TryAcquire(stale, (1 << 23) - 1, out _, out _);
        bucket.Time.Advance(Window * 2); // full again, whatever that request took

        bucket.Core = 0;
        bool refilled = false;
        for (int i = 0; i < 10 && !refilled; i++)
        {
            Assert.True(host.TryAcquire(bucket.Limiter.Clock.Now(), 1, out _, out _));
            refilled = host.HeldInBlocks(bucket.Limiter.Clock.Now()) > 0; // core 0 refilled a block of its own
        }

        Assert.True(refilled);
    }

    [Fact]
    public void Refund_PerCoreBucket_FreesNothing()
    {
        var time = new FakeTimeProvider();
        using var limiter = (RateEngineLimiter)Create(10, 0, QueueProcessingOrder.OldestFirst, time);

        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation));
        Assert.False(reservation.Refund());
        Assert.Equal(9, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    /// <summary>
    /// A stale clock read on core 0, which takes 3 single tokens (a block of 2 is left with one), then 6 token intervals
    /// later (the bucket full again) core 1 takes <paramref name="tokens"/> at a fresh read.
    /// </summary>
    private static (PerCoreBucketHost Host, long Stale) LeftoverOnCoreZeroThenCoreOneTakes(SteeredBucket bucket, int tokens)
    {
        PerCoreBucketHost host = bucket.Host;
        long stale = bucket.Limiter.Clock.Now();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(host.TryAcquire(stale, 1, out _, out _));
        }

        bucket.Time.Advance(Window * 6 / 10);
        bucket.Core = 1;
        Assert.True(host.TryAcquire(bucket.Limiter.Clock.Now(), tokens, out _, out _));
        return (host, stale);
    }

    /// <summary>A per-core bucket of <c>burst</c> tokens per <see cref="RateLimiterContractTests.Window"/> on a fake clock, whose requests start from block <see cref="Core"/>.</summary>
    private sealed class SteeredBucket : IDisposable
    {
        public SteeredBucket(int burst, int stripes)
        {
            Limiter = new LockFreeTokenBucketRateLimiter(
                LockFreeTokenBucketRateLimiterTests.Options(burst, burst, Window, 0, QueueProcessingOrder.OldestFirst, autoReplenishment: true),
                new PerCoreReservationOptions { Stripes = stripes },
                Time);
            ((IPerCoreHost)Limiter.Host).ChooseStripe = () => Core;
            Host = (PerCoreBucketHost)Limiter.Host;
        }

        public FakeTimeProvider Time { get; } = new();

        public LockFreeTokenBucketRateLimiter Limiter { get; }

        public PerCoreBucketHost Host { get; }

        public int Core { get; set; }

        public void Dispose() => Limiter.Dispose();
    }
}
