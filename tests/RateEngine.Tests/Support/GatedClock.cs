using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Support;

/// <summary>
/// A <see cref="FakeTimeProvider"/> whose next clock read on one chosen thread waits at a gate: a test stalls that thread
/// between two steps of a decision (after it found a key's entry, before it reads the entry's state), changes the table
/// meanwhile, then lets it go on. Timers are the fake provider's, so <see cref="Advance"/> fires them.
/// </summary>
internal sealed class GatedClock : TimeProvider, IDisposable
{
    private readonly FakeTimeProvider _time = new();
    private readonly ManualResetEventSlim _reached = new();
    private readonly ManualResetEventSlim _open = new();
    private int _gatedThread = -1;

    public override long TimestampFrequency => _time.TimestampFrequency;

    public override DateTimeOffset GetUtcNow() => _time.GetUtcNow();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        _time.CreateTimer(callback, state, dueTime, period);

    public override long GetTimestamp()
    {
        if (Interlocked.CompareExchange(ref _gatedThread, -1, Environment.CurrentManagedThreadId) == Environment.CurrentManagedThreadId)
        {
            _reached.Set();
            Assert.True(_open.Wait(TimeSpan.FromSeconds(30)), "the gate was never opened");
        }

        return _time.GetTimestamp();
    }

    public void Advance(TimeSpan delta) => _time.Advance(delta);

    /// <summary>Runs <paramref name="work"/> on a new thread whose first clock read waits at the gate; returns once it waits there.</summary>
    public Task<T> StallAtFirstClockRead<T>(Func<T> work)
    {
        var started = new TaskCompletionSource<int>();
        var run = Task.Factory.StartNew(
            () =>
            {
                Volatile.Write(ref _gatedThread, Environment.CurrentManagedThreadId);
                started.SetResult(0);
                return work();
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default);
        started.Task.Wait();
        Assert.True(_reached.Wait(TimeSpan.FromSeconds(30)), "the stalled thread never read the clock");
        return run;
    }

    public void Open() => _open.Set();

    public void Dispose()
    {
        _reached.Dispose();
        _open.Dispose();
    }
}
