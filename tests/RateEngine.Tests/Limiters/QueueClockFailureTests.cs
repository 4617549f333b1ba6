using System.Threading.RateLimiting;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Limiters;

/// <summary>A clock that fails while a request is being queued: the call fails, and no waiter is left behind.</summary>
public class QueueClockFailureTests
{
    private static readonly FixedWindowRateLimiterOptions OnePerMinute = new() { PermitLimit = 1, Window = TimeSpan.FromMinutes(1), QueueLimit = 1 };

    [Fact]
    public void AcquireAsync_ClockFailsOnceTheWaiterIsQueued_LeavesNoWaiterBehind()
    {
        // The clock is read again after the waiter is queued. Failing there used to leave a waiter nobody held and no
        // wake-up armed: every later request was refused as queued behind it, for good.
        var time = new FailingClock();
        using var limiter = new LockFreeFixedWindowRateLimiter(OnePerMinute, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.FailAfterNextTimer = true;

        Assert.Throws<TimeoutException>(() => limiter.AcquireAsync(1));

        time.Failing = false;
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_ClockFailsWhileTheWakeupIsSet_TheNextWaiterIsStillServed()
    {
        // The wake-up's own clock read (its delay after a step back) failed after the wake-up was noted as armed: the next
        // waiter, due no sooner, trusted it and armed nothing, and was never served.
        var time = new FailingClock();
        using var limiter = new LockFreeFixedWindowRateLimiter(OnePerMinute, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        time.FailAfterNextTimer = true;
        time.ReadsBeforeFailing = 1; // the read after the waiter is queued passes; the wake-up's fails

        Assert.Throws<TimeoutException>(() => limiter.AcquireAsync(1));

        time.Failing = false;
        time.Advance(TimeSpan.FromSeconds(1));
        Task<RateLimitLease> waiting = limiter.AcquireAsync(1).AsTask();
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(waiting.IsCompleted);
        Assert.True((await waiting).IsAcquired);
    }

    [Fact]
    public async Task Wakeup_ClockFailsWhenItFires_TheWaiterIsServedOnceTheClockWorksAgain()
    {
        // The wake-up noted itself done before it served: a clock that failed in it left the waiter with no wake-up armed
        // (and with the pool's timers, the exception ended the process). Every later request was refused as queued behind it.
        var time = new FailingClock();
        using var limiter = new LockFreeFixedWindowRateLimiter(OnePerMinute, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiting = limiter.AcquireAsync(1).AsTask();
        (time.Failing, time.FailOnce) = (true, true);

        time.Advance(TimeSpan.FromMinutes(1)); // the wake-up fires, and its clock read fails
        Assert.False(waiting.IsCompleted);

        time.Advance(TimeSpan.FromMilliseconds(1)); // the clock works again
        Assert.True(waiting.IsCompleted);
        Assert.True((await waiting).IsAcquired);
    }

    [Fact]
    public async Task Wakeup_ClockStaysBroken_RetriesBackOffAndTheWaiterIsServedOnceItWorks()
    {
        // A clock that keeps failing must not turn the retry into a timer that fires every millisecond for as long.
        var time = new CountingFailingClock();
        using var limiter = new LockFreeFixedWindowRateLimiter(OnePerMinute, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiting = limiter.AcquireAsync(1).AsTask();
        time.Failing = true;

        time.Advance(TimeSpan.FromMinutes(1));
        for (int step = 0; step < 500; step++)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
        }

        Assert.InRange(time.Failures, 1, 12); // 1, 2, 4, ... 256 ms apart in the half second: 9 tries
        Assert.False(waiting.IsCompleted);

        time.Failing = false;
        time.Advance(TimeSpan.FromSeconds(1)); // the longest retry delay
        Assert.True(waiting.IsCompleted);
        Assert.True((await waiting).IsAcquired);
    }

    private sealed class CountingFailingClock : Microsoft.Extensions.Time.Testing.FakeTimeProvider
    {
        public bool Failing { get; set; }

        public int Failures { get; private set; }

        public override long GetTimestamp()
        {
            if (Failing)
            {
                Failures++;
                throw new TimeoutException("the clock failed");
            }

            return base.GetTimestamp();
        }
    }

    [Fact]
    public async Task AcquireAsync_ClockFailsWhenTheHeadIsCancelled_CancelDoesNotThrowAndTheNextWaiterIsServed()
    {
        var twoQueued = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromMinutes(1), QueueLimit = 2 };
        var time = new FailingClock();
        using var limiter = new LockFreeFixedWindowRateLimiter(twoQueued, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cancel = new CancellationTokenSource();
        Task<RateLimitLease> head = limiter.AcquireAsync(1, cancel.Token).AsTask();
        Task<RateLimitLease> next = limiter.AcquireAsync(1).AsTask();
        (time.Failing, time.FailOnce) = (true, true);

        cancel.Cancel(); // re-arming the wake-up for the next waiter reads the clock, which fails
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => head);

        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(next.IsCompleted);
        Assert.True((await next).IsAcquired);
    }

    [Fact]
    public void AcquireAsync_PartitionKeysClockFailsOnceTheWaiterIsQueued_TheKeyIsAdmittedAndEvictedLater()
    {
        // On a partition key the orphaned waiter also kept the key from ever being evicted as idle.
        var time = new FailingClock();
        using PartitionedRateLimiter<string> limiter = PartitionedLimiter.CreateFixedWindow<string, string>(
            key => key, _ => OnePerMinute, new PartitionedLimiterOptions { TimeProvider = time });
        var partitions = (RateEngine.Partitioning.IPartitionDiagnostics)limiter;
        Assert.True(limiter.AttemptAcquire("ann").IsAcquired);
        time.FailAfterNextTimer = true;

        Assert.Throws<TimeoutException>(() => limiter.AcquireAsync("ann"));

        time.Failing = false;
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(limiter.AttemptAcquire("ann").IsAcquired);
        time.Advance(TimeSpan.FromHours(1));
        partitions.SweepAllShards();
        Assert.Equal(0, partitions.PartitionCount);
    }
}
