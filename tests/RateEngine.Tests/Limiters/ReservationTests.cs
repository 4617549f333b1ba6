using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Limiters;

/// <summary>
/// <see cref="RateEngineLimiter.Reservation"/>: the one way to refund, which layered policies and budgets use. Every
/// algorithm.
/// </summary>
public class ReservationTests
{
    public static TheoryData<LimiterKind> Kinds => new() { LimiterKind.Log, LimiterKind.Counter, LimiterKind.Fixed, LimiterKind.Bucket };

    private static RateEngineLimiter Create(LimiterKind kind, int limit, FakeTimeProvider time) =>
        new LimiterSpec(kind, limit, WindowTicks: TimeSpan.FromSeconds(10).Ticks, Segments: 5, TokensPerPeriod: limit).Create(time);

    [Fact]
    public void Refund_OfAFixedWindowAdmission2Pow33WindowsLate_FreesNothingInTheWindowThatAliasesIt()
    {
        // Windows of one tick: window 2^33 stores the same 33-bit epoch as window 0. A reservation of window 0 refunded
        // then must not free the permit of an admission in window 2^33.
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = new LimiterSpec(LimiterKind.Fixed, Limit: 1, WindowTicks: 1).Create(time);
        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? old));
        time.Advance(TimeSpan.FromTicks(1L << 21)); // far enough from both ends that no word reads as ahead of now
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.Advance(TimeSpan.FromTicks((1L << 33) - (1L << 21)));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.False(old.Refund());
        Assert.False(limiter.AttemptAcquire(1).IsAcquired); // still one in this window
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Refund_Twice_FreesPermitsAtMostOnce(LimiterKind kind)
    {
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = Create(kind, 3, time);
        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 2, out RateEngineLimiter.Reservation? alone));
        Assert.True(alone.Refund());
        Assert.Equal(3, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.False(alone.Refund());
        Assert.False(alone.Keep());
        Assert.Equal(3, limiter.GetStatistics()!.CurrentAvailablePermits);

        // With an admission after it, whether the refund can still be exact depends on the algorithm; a second one never frees.
        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? first));
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        first.Refund();
        long afterFirstRefund = limiter.GetStatistics()!.CurrentAvailablePermits;
        Assert.False(first.Refund());
        Assert.Equal(afterFirstRefund, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.Equal(afterFirstRefund, limiter.AttemptAcquire(2).IsAcquired ? 2 : limiter.AttemptAcquire(1).IsAcquired ? 1 : 0);
    }

    [Fact]
    public async Task Refund_WhileAZeroPermitRequestWaits_ServesIt()
    {
        // A zero-permit waiter queues no permits, yet it waits for a free one: the refund that frees it serves it (on a
        // manual clock nothing else comes to look).
        using var limiter = new LockFreeFixedWindowRateLimiter(
            new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromMinutes(1), QueueLimit = 1, AutoReplenishment = false },
            new FakeTimeProvider());
        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation));
        Task<RateLimitLease> probe = limiter.AcquireAsync(0).AsTask();
        Assert.False(probe.IsCompleted);

        Assert.True(reservation.Refund());

        Assert.True(probe.IsCompletedSuccessfully, "a free permit, and the zero-permit waiter still sleeps");
        using RateLimitLease lease = await probe;
        Assert.True(lease.IsAcquired);
    }

    /// <summary>
    /// A refund that frees the only permit while a request is on its way into the queue: one of them must see the other,
    /// or the waiter sleeps with its permit free (for good on a manual clock, where no timer comes to look).
    /// </summary>
    [Fact]
    public async Task Refund_RacingARequestThatQueues_TheRequestIsServed()
    {
        for (int round = 0; round < 3_000; round++)
        {
            using var limiter = new LockFreeFixedWindowRateLimiter(
                new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromMinutes(1), QueueLimit = 1, AutoReplenishment = false },
                new FakeTimeProvider());
            Assert.True(limiter.TryReserve(limiter.Clock.Now(), 1, out RateEngineLimiter.Reservation? reservation));
            ValueTask<RateLimitLease> request;
            bool refunded = false;
            using var start = new Barrier(2);
            var refunder = new Thread(() =>
            {
                start.SignalAndWait();
                refunded = reservation.Refund();
            });
            refunder.Start();
            start.SignalAndWait();
            request = limiter.AcquireAsync(1);
            refunder.Join();

            Assert.True(refunded);
            Assert.True(request.IsCompleted, $"round {round}: the permit came back but the queued request was never served");
            Assert.True((await request).IsAcquired);
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Refund_AfterKeep_FreesNothing(LimiterKind kind)
    {
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = Create(kind, 2, time);
        Assert.True(limiter.TryReserve(limiter.Clock.Now(), 2, out RateEngineLimiter.Reservation? reservation));
        Assert.True(reservation.Keep());
        Assert.True(reservation.IsEnded);
        Assert.False(reservation.Refund());
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }
}
