using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Timing;

/// <summary>
/// The library's timers are made without the caller's execution context (a timer runs every callback under the context
/// it was made in, for its whole life).
/// </summary>
public class ContextFreeTimerTests
{
    private static readonly FixedWindowRateLimiterOptions OnePerMinute = new() { PermitLimit = 1, Window = TimeSpan.FromMinutes(1), QueueLimit = 1 };

    public static TheoryData<string> Owners => new() { "partitioned limiter", "policy", "limiter's wakeup" };

    [Theory]
    [MemberData(nameof(Owners))]
    public void CreateTimer_CallerFlowsItsContext_TimerIsMadeWithout(string owner)
    {
        var time = new RecordingTime();
        using IDisposable made = Make(owner, time);
        Assert.NotEmpty(time.FlowSuppressedAtCreation);
        Assert.All(time.FlowSuppressedAtCreation, Assert.True);
    }

    [Fact]
    public void AcquireAsync_WakeupTimerCannotBeMade_LeavesNoWaiterBehind()
    {
        // The timer is made before the waiter is queued: a provider that throws there used to leave a waiter that nobody
        // held in the queue, and every request behind it was refused as queued ahead, for good.
        var time = new TimerlessTime();
        using var limiter = new LockFreeFixedWindowRateLimiter(OnePerMinute, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.Throws<NotSupportedException>(() => limiter.AcquireAsync(1));

        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
    }

    private static IDisposable Make(string owner, TimeProvider time)
    {
        switch (owner)
        {
            case "partitioned limiter":
                return PartitionedLimiter.CreateFixedWindow<string, string>(key => key, _ => OnePerMinute, new PartitionedLimiterOptions { TimeProvider = time });
            case "policy":
                return new RatePolicyBuilder<string>().UseTimeProvider(time)
                    .AddLayer("user", user => user, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1))
                    .Build();
            default:
                var limiter = new LockFreeFixedWindowRateLimiter(OnePerMinute, time);
                Assert.True(limiter.AttemptAcquire(1).IsAcquired);
                _ = limiter.AcquireAsync(1); // the first waiter makes the wakeup timer
                return limiter;
        }
    }

    /// <summary>A fake clock that notes, for each timer made, whether the execution context's flow was suppressed.</summary>
    private sealed class RecordingTime : FakeTimeProvider
    {
        public List<bool> FlowSuppressedAtCreation { get; } = [];

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            lock (FlowSuppressedAtCreation)
            {
                FlowSuppressedAtCreation.Add(ExecutionContext.IsFlowSuppressed());
            }

            return base.CreateTimer(callback, state, dueTime, period);
        }
    }

    /// <summary>A fake clock that cannot make timers.</summary>
    private sealed class TimerlessTime : FakeTimeProvider
    {
        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
            throw new NotSupportedException("no timers here");
    }
}
