using System.Diagnostics;

namespace RateEngine.Tests.Support;

/// <summary>
/// A <see cref="Stopwatch"/>-like source that moves only when told to, and a <see cref="CoarseTimeProvider"/> over it
/// whose ticker runs only when the test calls <c>Tick</c>: real time (the source) and the cached clock can then be moved
/// apart deterministically, as a stalled ticker would.
/// </summary>
public sealed class ManualTicks
{
    private long _now;

    public ManualTicks(TimeSpan start) => _now = ToTimestamp(start);

    public long Now => Volatile.Read(ref _now);

    public void Advance(TimeSpan span) => Interlocked.Add(ref _now, ToTimestamp(span));

    public void Set(long timestamp) => Volatile.Write(ref _now, timestamp);

    internal CoarseTimeProvider CreateProvider() => new(TimeSpan.FromMilliseconds(1), () => Now, manual: true);

    public static long ToTimestamp(TimeSpan span) => span.Ticks * Stopwatch.Frequency / TimeSpan.TicksPerSecond;
}
