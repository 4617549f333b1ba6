using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeTokenBucketRateLimiter"/> with per-core blocks (<see cref="PerCoreReservationOptions"/>).
/// </summary>
public sealed class PerCoreLockFreeTokenBucketRateLimiterTests : RateLimiterContractTests
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
    public void Refund_PerCoreBucket_FreesNothing()
    {
        var time = new FakeTimeProvider();
        using var limiter = (RateEngineLimiter)Create(10, 0, QueueProcessingOrder.OldestFirst, time);

        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation));
        Assert.False(reservation.Refund());
        Assert.Equal(9, limiter.GetStatistics()!.CurrentAvailablePermits);
    }
}
