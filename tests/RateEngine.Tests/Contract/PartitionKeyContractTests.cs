using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Contract;

// The whole contract, per key of each partitioned limiter: same expectations as the single limiters.

public sealed class PartitionedSlidingWindowLogKeyTests : RateLimiterContractTests
{
    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override int LargePermitLimit => 1 << 16;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time)
    {
        var options = SlidingWindowLogRateLimiterTests.Options(permitLimit, Window, queueLimit, order);
        return new PartitionKeyLimiter(PartitionedLimiter.CreateSlidingWindowLog<int, int>(k => k, _ => options, PartitionKeyLimiter.Options(time)), Window);
    }

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window);

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window - elapsed;
}

public class PartitionedSlidingWindowCounterKeyTests : RateLimiterContractTests
{
    /// <summary>Whether the key is promoted to per-core blocks before its first request (<see cref="PartitionKeyLimiter.For"/>).</summary>
    protected virtual bool Hot => false;

    private static readonly TimeSpan Segment = SlidingWindowCounterRateLimiterTests.Segment;

    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Segment;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time)
    {
        var options = SlidingWindowCounterRateLimiterTests.Options(
            permitLimit, Window, SlidingWindowCounterRateLimiterTests.Segments, queueLimit, order, autoReplenishment: true);
        return PartitionKeyLimiter.For(PartitionedLimiter.CreateSlidingWindowCounter<int, int>(k => k, _ => options, PartitionKeyLimiter.Options(time, Hot)), Segment, Hot);
    }

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window + Segment);

    protected override TimeSpan FullRefill => Window + Segment;

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window + Segment - elapsed;
}

public class PartitionedFixedWindowKeyTests : RateLimiterContractTests
{
    /// <summary>Whether the key is promoted to per-core blocks before its first request (<see cref="PartitionKeyLimiter.For"/>).</summary>
    protected virtual bool Hot => false;

    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time)
    {
        var options = LockFreeFixedWindowRateLimiterTests.Options(permitLimit, Window, queueLimit, order, autoReplenishment: true);
        return PartitionKeyLimiter.For(PartitionedLimiter.CreateFixedWindow<int, int>(k => k, _ => options, PartitionKeyLimiter.Options(time, Hot)), Window, Hot);
    }

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window);

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) => Window - elapsed;
}

public class PartitionedTokenBucketKeyTests : RateLimiterContractTests
{
    /// <summary>Whether the key is promoted to per-core blocks before its first request (<see cref="PartitionKeyLimiter.For"/>).</summary>
    protected virtual bool Hot => false;

    protected override bool ExpectedAutoReplenishing => true;

    protected override TimeSpan ExpectedReplenishmentPeriod => Window;

    protected override string OverLimitParamName => "tokenCount";

    protected override ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time)
    {
        var options = LockFreeTokenBucketRateLimiterTests.Options(permitLimit, permitLimit, Window, queueLimit, order, autoReplenishment: true);
        return PartitionKeyLimiter.For(PartitionedLimiter.CreateTokenBucket<int, int>(k => k, _ => options, PartitionKeyLimiter.Options(time, Hot)), Window, Hot);
    }

    protected override void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time) => time.Advance(Window * 2);

    protected override TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed) =>
        LockFreeTokenBucketRateLimiterTests.TimeForTokens(permitLimit, permits, elapsed);
}

// The whole contract again on a key promoted to per-core blocks (PartitionedLimiterOptions.PerCoreReservation) before
// its first request: the partition's glue around the blocks (the admission's re-check of the entry, probes, statistics,
// the key limiter made for waiters over a hot entry) must keep every promise a plain key keeps.

public sealed class PartitionedFixedWindowHotKeyTests : PartitionedFixedWindowKeyTests
{
    protected override bool Hot => true;
}

public sealed class PartitionedSlidingWindowCounterHotKeyTests : PartitionedSlidingWindowCounterKeyTests
{
    protected override bool Hot => true;
}

public sealed class PartitionedTokenBucketHotKeyTests : PartitionedTokenBucketKeyTests
{
    protected override bool Hot => true;
}
