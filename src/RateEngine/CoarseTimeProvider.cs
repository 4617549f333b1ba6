using System.Diagnostics;
using RateEngine.Timing;

namespace RateEngine;

/// <summary>
/// A cheap clock, by choice: a <see cref="TimeProvider"/> whose <see cref="GetTimestamp"/> returns a timestamp cached in
/// one shared field, which a dedicated background thread advances from <see cref="Stopwatch"/> every
/// <see cref="Resolution"/> (1 ms by default). A read costs about a nanosecond instead of a clock call (25-35 ns for
/// <see cref="Stopwatch.GetTimestamp"/> on the 2-core VM RateEngine is benchmarked on), in exchange for a stamp that lags
/// real time.
/// </summary>
/// <remarks>
/// <para>Pass it to any RateEngine limiter, partitioned limiter or policy in place of <see cref="TimeProvider.System"/>
/// (which stays the default everywhere). RateEngine's limiters recognise it and read its field directly, with no virtual
/// call and no high-water mark: the field never decreases.</para>
/// <para><b>What it costs in accuracy.</b> Decisions are stamped with the last tick, which lags real time by up to the
/// resolution plus however late the thread was woken (scheduler delay; on Windows the system timer resolution, 1-15.6 ms
/// unless a process raised it). Every guarantee holds exactly in this clock's time. Against real time, with D the
/// largest lag: decisions made in a real interval [a, b) carry stamps in [a - D, b), so a sliding window admits at most
/// its limit in any real interval of length W - D (at most twice it in one of length W, for D &lt;= W), a fixed window
/// at most twice its limit in one aligned real window but three times in an unaligned real interval of length W (decisions
/// just after a boundary may still count in the window before it), and a token bucket at most burst + rate * (T + D) in
/// any real interval of length T.</para>
/// <para><b>A stalled ticker only stops time.</b> If the thread is descheduled, the process is paused, or the provider is
/// disposed, the stamp stands still: windows stop rolling over and tokens stop refilling, so limiters get stricter, never
/// looser. The next tick jumps to the real time at once, without replaying the missed ticks. Decisions made during the
/// stall were stamped early and count in the window their stamp falls in, so the bound above holds with D the stall's
/// length plus the usual lag: right after the jump, a window's limit may be admitted again next to permits that were
/// admitted during the stall. Requests queued on a limiter wait while time stands still, and after
/// <see cref="Dispose"/> it stands still for good: dispose the provider only after the limiters that read it (their
/// dispose fails whatever is still queued).</para>
/// <para><b>Choose it</b> for windows of a second or more, where a lag of a few milliseconds is noise; keep
/// <see cref="TimeProvider.System"/> for sub-millisecond windows or where a permit must never be stamped late.</para>
/// <para>The thread starts on the first read, so an instance nobody reads costs nothing. It is a background thread and
/// never keeps the process alive. <see cref="Shared"/> lives as long as the process; an instance you create owns its
/// thread until <see cref="Dispose"/> (or until it is collected).</para>
/// </remarks>
public sealed class CoarseTimeProvider : TimeProvider, IDisposable, ICoarseClock
{
    private static readonly TimeSpan MinResolution = TimeSpan.FromMilliseconds(1);
    private static readonly TimeSpan MaxResolution = TimeSpan.FromSeconds(1);

    private readonly CoarseTicker _ticker;

    /// <summary>Creates a provider with the default <see cref="Resolution"/> of 1 ms. Its thread starts on the first read.</summary>
    public CoarseTimeProvider()
        : this(DefaultResolution)
    {
    }

    /// <summary>Creates a provider whose thread ticks every <paramref name="resolution"/>. Its thread starts on the first read.</summary>
    /// <param name="resolution">
    /// How often the cached timestamp advances: at least 1 ms and at most 1 s, rounded up to whole milliseconds (the
    /// thread waits on a monitor, whose timeouts count milliseconds). Default (parameterless constructor) 1 ms.
    /// </param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="resolution"/> is below 1 ms or above 1 s.</exception>
    public CoarseTimeProvider(TimeSpan resolution)
        : this(resolution, source: null, manual: false)
    {
    }

    /// <summary>
    /// For tests: with <paramref name="manual"/>, no thread ever runs and the timestamp moves only when
    /// <see cref="Tick"/> is called, reading <paramref name="source"/> (<see cref="Stopwatch.GetTimestamp"/> if null), so a
    /// test can stall and resume the ticker deterministically.
    /// </summary>
    internal CoarseTimeProvider(TimeSpan resolution, Func<long>? source, bool manual)
    {
        if (resolution < MinResolution || resolution > MaxResolution)
        {
            throw new ArgumentOutOfRangeException(nameof(resolution), resolution, "The resolution must be at least 1 ms and at most 1 s.");
        }

        long milliseconds = (resolution.Ticks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;
        Resolution = TimeSpan.FromMilliseconds(milliseconds);
        _ticker = new CoarseTicker((int)milliseconds, source, manual);
    }

    /// <summary>Stops an undisposed provider's thread when the provider is collected.</summary>
    ~CoarseTimeProvider() => _ticker?.Stop(); // null when the constructor threw

    /// <summary>The default <see cref="Resolution"/>: 1 ms.</summary>
    public static TimeSpan DefaultResolution { get; } = TimeSpan.FromMilliseconds(1);

    /// <summary>
    /// The process-wide instance, with the default 1 ms <see cref="Resolution"/>. Its thread starts on its first read and
    /// runs until the process exits; <see cref="Dispose"/> does nothing on it, since others may share it.
    /// </summary>
    public static CoarseTimeProvider Shared { get; } = new();

    /// <summary>How often the cached timestamp advances (whole milliseconds). Default 1 ms.</summary>
    public TimeSpan Resolution { get; }

    CoarseTicker ICoarseClock.Ticker => _ticker;

    /// <summary><see cref="Stopwatch.Frequency"/>: timestamps are <see cref="Stopwatch"/> timestamps, only cached.</summary>
    public override long TimestampFrequency => Stopwatch.Frequency;

    /// <summary>
    /// The <see cref="Stopwatch"/> timestamp the ticker last published: never less than any value returned before,
    /// behind <see cref="Stopwatch.GetTimestamp"/> by up to the resolution plus the thread's scheduling delay. The first
    /// read starts the thread.
    /// </summary>
    public override long GetTimestamp() => _ticker.Read();

    /// <summary>
    /// The system's UTC time (<see cref="TimeProvider.System"/>) as of the tick that published the current
    /// <see cref="GetTimestamp"/>: it advances and stands still with the timestamp, and like the system's UTC time it
    /// follows wall-clock adjustments.
    /// </summary>
    public override DateTimeOffset GetUtcNow()
    {
        _ticker.Read();
        return new DateTimeOffset(_ticker.UtcTicks, TimeSpan.Zero);
    }

    /// <summary><see cref="TimeProvider.System"/>'s local time zone.</summary>
    public override TimeZoneInfo LocalTimeZone => System.LocalTimeZone;

    /// <summary>A timer from <see cref="TimeProvider.System"/>: timers wait real time, not the cached clock.</summary>
    /// <returns>The system timer.</returns>
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        System.CreateTimer(callback, state, dueTime, period);

    /// <summary>
    /// Stops this provider's thread: its time stands still from then on, so limiters on it only get stricter. Does
    /// nothing on <see cref="Shared"/>.
    /// </summary>
    public void Dispose()
    {
        if (!ReferenceEquals(this, Shared))
        {
            _ticker.Stop();
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>For tests: publishes a fresh reading of the source now (the step the thread takes every resolution).</summary>
    internal void Tick() => _ticker.Tick();

    /// <summary>For tests: whether the ticker thread is running.</summary>
    internal bool IsTicking => _ticker.IsRunning;
}
