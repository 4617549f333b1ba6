using System.Diagnostics;
using System.Runtime.InteropServices;

namespace RateEngine.Timing;

/// <summary>
/// The cached timestamp behind <c>CoarseTimeProvider</c>: one shared field that a dedicated background thread advances
/// every period from <see cref="Stopwatch"/>, so that a read costs a load instead of a clock call.
/// </summary>
/// <remarks>
/// <para><b>Monotonic.</b> The field only ever grows: every tick publishes with a larger-wins CAS, so two publishers (the
/// thread and a first reader starting it) cannot move it back, and readers (<c>LimiterClock</c>) need no high-water mark.</para>
/// <para><b>A stall only stops time.</b> A ticker that is late (descheduled, the machine paused) or stopped leaves the
/// field where it was: decisions in the meantime carry an earlier stamp than the real time, so they count in an earlier
/// window (stricter). The next tick jumps to the real time at once.</para>
/// <para><b>Lazy.</b> The thread starts on the first read (<see cref="Read"/>), never before; it is a background thread, so
/// it never keeps a process alive, and it stops for good on <see cref="Stop"/>. It holds no reference to the provider,
/// so an undisposed provider can still be collected (its finalizer stops the thread).</para>
/// </remarks>
internal sealed class CoarseTicker
{
    private const int Idle = 0;
    private const int Running = 1;
    private const int Stopped = 2;

    /// <summary>How many recent gaps between ticks <see cref="LongestRecentGap"/> covers: a few hundred milliseconds at 1 ms.</summary>
    private const int GapsKept = 256;

    private readonly Func<long> _source;
    private readonly int _periodMilliseconds;
    private readonly object _gate = new();
    private readonly Lock _ticking = new();
    private bool _stopping;
    private int _state;

    /// <summary>Written by ticks, read by every limiter on the provider: alone on its cache lines.</summary>
    private Stamps _stamps;

    /// <summary>The gaps between the last <see cref="GapsKept"/> ticks (source ticks), and the previous tick's reading; under the tick lock.</summary>
    private readonly long[] _gaps = new long[GapsKept];
    private int _nextGap;
    private long _previous;
    private long _longestGap;
    private readonly long _gapCeiling;

    /// <param name="periodMilliseconds">The ticker thread's wait between ticks.</param>
    /// <param name="source">The timestamp a tick publishes; null for <see cref="Stopwatch.GetTimestamp"/>.</param>
    /// <param name="manual">No thread ever: only <see cref="Tick"/> (and the first read) publishes. For tests.</param>
    public CoarseTicker(int periodMilliseconds, Func<long>? source = null, bool manual = false)
    {
        _periodMilliseconds = periodMilliseconds;
        _source = source ?? Stopwatch.GetTimestamp;
        _gapCeiling = Stopwatch.Frequency * Math.Max(4L * periodMilliseconds, 16) / 1000;
        _state = manual ? Stopped : Idle;
    }

    /// <summary>The ticker thread's wait between ticks: how far the cached timestamp may lag behind the source's.</summary>
    public int PeriodMilliseconds => _periodMilliseconds;

    /// <summary>
    /// The longest of the recent gaps between two ticks, in the source's ticks: how far a reading may lag behind the source,
    /// as the ticker has really run (its period plus how late the thread woke: milliseconds on a loaded machine, a timer
    /// period of 15.6 ms on Windows). Zero before the second tick.
    /// </summary>
    public long LongestRecentGap => Volatile.Read(ref _longestGap);

    /// <summary>The cached timestamp, for a reader that has already read once through <see cref="Read"/> (a plain load).</summary>
    public long Timestamp => Volatile.Read(ref _stamps.Timestamp);

    /// <summary>The system's UTC time (100 ns ticks) read by the tick that last published, for <c>GetUtcNow</c>.</summary>
    public long UtcTicks => Volatile.Read(ref _stamps.UtcTicks);

    /// <summary>Whether the ticker thread was started (and not told to stop).</summary>
    public bool IsRunning => Volatile.Read(ref _state) == Running;

    /// <summary>The cached timestamp; the first read publishes one and starts the thread.</summary>
    public long Read()
    {
        long timestamp = Volatile.Read(ref _stamps.Timestamp);
        return timestamp != 0 ? timestamp : Start();
    }

    /// <summary>Publishes a fresh reading (larger wins).</summary>
    /// <remarks>
    /// One tick at a time: the ticker thread and the first readers (which publish before the thread's first tick) may race,
    /// and a tick that read the UTC time first could otherwise write it after a later tick's, stepping <c>GetUtcNow</c>
    /// back. Ticks come once a resolution, so the lock is all but never contended; readers never take it.
    /// </remarks>
    public void Tick()
    {
        lock (_ticking)
        {
            long utcTicks = TimeProvider.System.GetUtcNow().UtcTicks;
            long now = _source();

            // The UTC time goes first, so a reader that sees this tick's timestamp sees a UTC time at least as recent.
            Volatile.Write(ref _stamps.UtcTicks, utcTicks);
            if (now > Volatile.Read(ref _stamps.Timestamp))
            {
                Volatile.Write(ref _stamps.Timestamp, now); // the only writer, under the lock
            }

            if (_previous != 0 && now > _previous)
            {
                // A stall (a blocking collection, a paused VM) is not a lag a retry will meet again: its gap counts only up to
                // a late wake-up's (a 15.6 ms Windows timer period, or four periods), so one pause does not lengthen every
                // RETRY_AFTER for the next 256 ticks.
                _gaps[_nextGap] = Math.Min(now - _previous, _gapCeiling);
                _nextGap = (_nextGap + 1) % GapsKept;
                Volatile.Write(ref _longestGap, _gaps.Max());
            }

            _previous = Math.Max(_previous, now);
        }
    }

    /// <summary>Stops the thread for good (or keeps it from ever starting). Time then stands still.</summary>
    public void Stop()
    {
        if (Interlocked.Exchange(ref _state, Stopped) != Running)
        {
            return;
        }

        lock (_gate)
        {
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
    }

    private long Start()
    {
        // Every reader that still sees no time publishes one itself, so none returns zero, even while another starts the thread.
        Tick();
        if (Interlocked.CompareExchange(ref _state, Running, Idle) == Idle)
        {
            // UnsafeStart: the ticker must not capture the first reader's execution context (its AsyncLocals) for ever.
            new Thread(Run) { IsBackground = true, Name = "RateEngine coarse clock" }.UnsafeStart();
        }

        return Volatile.Read(ref _stamps.Timestamp);
    }

    private void Run()
    {
        lock (_gate)
        {
            while (!_stopping)
            {
                // A wait on a monitor, not a sleep: Stop wakes it at once. It may return late (scheduling), never much early.
                Monitor.Wait(_gate, _periodMilliseconds);
                if (!_stopping)
                {
                    Tick();
                }
            }
        }
    }

    /// <summary>
    /// The two published words with a cache line of padding on each side, so that no other object's writes share their
    /// line: a reader's copy is invalidated only by a tick.
    /// </summary>
    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private struct Stamps
    {
        [FieldOffset(64)]
        public long Timestamp;

        [FieldOffset(72)]
        public long UtcTicks;
    }
}
