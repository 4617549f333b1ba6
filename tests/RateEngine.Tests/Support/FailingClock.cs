using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Support;

/// <summary>A fake clock whose reads fail while <see cref="Failing"/> is set (a provider that throws is in scope).</summary>
internal sealed class FailingClock : FakeTimeProvider
{
    public bool Failing { get; set; }

    /// <summary>
    /// Sets <see cref="Failing"/> once the next timer is made and <see cref="ReadsBeforeFailing"/> more reads went through:
    /// the reads after that fail (in a limiter's first wait, after its waiter was queued).
    /// </summary>
    public bool FailAfterNextTimer { get; set; }

    /// <summary>Reads that still succeed after the timer <see cref="FailAfterNextTimer"/> waits for. Default 0.</summary>
    public int ReadsBeforeFailing { get; set; }

    private int _readsLeft = -1;

    /// <summary>Lets <paramref name="reads"/> more reads through, then sets <see cref="Failing"/>.</summary>
    public void FailAfter(int reads) => (_readsLeft, _failuresLeft) = (reads, 0);

    /// <summary>Lets <paramref name="reads"/> more reads through, then fails the <paramref name="failures"/> after them.</summary>
    public void FailAfter(int reads, int failures) => (_readsLeft, _failuresLeft) = (reads, failures);

    private int _failuresLeft;

    public override long GetTimestamp()
    {
        if (_readsLeft == 0)
        {
            (_readsLeft, Failing) = (-1, true);
        }
        else if (_readsLeft > 0)
        {
            _readsLeft--;
        }

        if (Failing)
        {
            Failing = !FailOnce && (_failuresLeft <= 0 || --_failuresLeft > 0);
            throw Failure();
        }

        return base.GetTimestamp();
    }

    /// <summary>What a failing read throws: a <see cref="TimeoutException"/> unless set.</summary>
    public Func<Exception> Failure { get; set; } = static () => new TimeoutException("the clock failed");

    /// <summary>Whether a failing read sets <see cref="Failing"/> back: one read fails, the next ones do not.</summary>
    public bool FailOnce { get; set; }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ITimer timer = base.CreateTimer(callback, state, dueTime, period);
        if (FailAfterNextTimer)
        {
            (FailAfterNextTimer, _readsLeft) = (false, ReadsBeforeFailing);
        }

        return timer;
    }
}
