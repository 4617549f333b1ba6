using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Support;

/// <summary>A fake clock whose reads fail while <see cref="Failing"/> is set (a provider that throws is in scope).</summary>
internal sealed class FailingClock : FakeTimeProvider
{
    public bool Failing { get; set; }

    /// <summary>Sets <see cref="Failing"/> once the next timer is made: the reads after it fail (a limiter's first wait).</summary>
    public bool FailAfterNextTimer { get; set; }

    public override long GetTimestamp() => Failing ? throw new TimeoutException("the clock failed") : base.GetTimestamp();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ITimer timer = base.CreateTimer(callback, state, dueTime, period);
        if (FailAfterNextTimer)
        {
            (FailAfterNextTimer, Failing) = (false, true);
        }

        return timer;
    }
}
