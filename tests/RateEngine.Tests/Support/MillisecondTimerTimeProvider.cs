using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Support;

/// <summary>
/// A fake clock whose timers count whole milliseconds and truncate the rest, as <see cref="System.Threading.Timer"/>
/// does. A limiter that re-arms such a timer for less than a millisecond gets a zero due time, which fires at once
/// (this fake fires it again and again without moving the clock); the guard turns that loop into a failure. A period
/// below a millisecond truncates to zero, which stops a periodic timer after its first tick, as a real one does.
/// </summary>
public sealed class MillisecondTimerTimeProvider(int maxCallbacks = 100) : FakeTimeProvider
{
    public int Callbacks { get; private set; }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        new Timer(base.CreateTimer(Counted, (callback, state), Truncate(dueTime), Truncate(period)));

    private void Counted(object? state)
    {
        (TimerCallback callback, object? inner) = ((TimerCallback, object?))state!;
        if (++Callbacks > maxCallbacks)
        {
            throw new InvalidOperationException("The timer keeps firing before the limiter has anything to do.");
        }

        callback(inner);
    }

    private static TimeSpan Truncate(TimeSpan span) =>
        span == Timeout.InfiniteTimeSpan ? span : TimeSpan.FromMilliseconds(Math.Floor(span.TotalMilliseconds));

    private sealed class Timer(ITimer inner) : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(Truncate(dueTime), Truncate(period));

        public void Dispose() => inner.Dispose();

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
