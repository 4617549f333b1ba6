using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The contract for <see cref="LockFreeTokenBucketRateLimiter"/> with per-core blocks and <c>AutoReplenishment = false</c>:
/// the blocks run on the manual clock, which <c>TryReplenish</c> moves by the provider time elapsed since the last credit.
/// </summary>
public sealed class ManualPerCoreLockFreeTokenBucketRateLimiterTests : SingleLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => false;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override string OverLimitParamName => "tokenCount";

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time) =>
        new LockFreeTokenBucketRateLimiter(
            LockFreeTokenBucketRateLimiterTests.Options(permitLimit, permitLimit, Window, queueLimit, order, autoReplenishment: false),
            new PerCoreReservationOptions(),
            time);

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time)
    {
        time.Advance(Window * 2);
        Assert.True(limiter.TryReplenish());
    }

    // As without blocks: the time elapsed since the last credit is credited by the next TryReplenish.
    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) =>
        LockFreeTokenBucketRateLimiterTests.TimeForTokens(permitLimit, permits, elapsed);

    [Fact]
    public void TryReplenish_TokensABlockHeld_ComeBackOnlyWithTheCreditedTime()
    {
        // Blocks hand out tokens the shared bucket gave them: without a TryReplenish no time passes for either, however far
        // the provider moves, and a credit brings back exactly its share.
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(100, 0, QueueProcessingOrder.OldestFirst, time);
        Assert.Equal(100, AdmitOneAtATime(limiter));

        time.Advance(Window * 10);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.True(limiter.TryReplenish()); // credits the whole time since creation, capped at the burst
        Assert.Equal(100, AdmitOneAtATime(limiter));
    }
}
