using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// The system clock, as a <see cref="TimeProvider"/> that also notes its last reading in the calling flow's box: a design's
/// decision reads this clock (exact mode's client clock, the hybrid mode's use-time check, the seed designs' scores), so
/// after an acquire the caller's box holds the time the decision was made on, which the saturation runs count per window.
/// </summary>
/// <remarks>
/// Wall time is derived from the timestamp (one origin), so a stamp and the UTC time a limiter sent to Redis agree exactly.
/// </remarks>
internal sealed class StampClock : TimeProvider
{
    private static readonly AsyncLocal<StrongBox<long>?> Box = new();
    private static readonly double TicksPerTimestamp = (double)TimeSpan.TicksPerSecond / Stopwatch.Frequency;

    private readonly long _originTimestamp = Stopwatch.GetTimestamp();
    private readonly long _originUtcTicks = System.GetUtcNow().UtcTicks;

    /// <summary>Gives the calling flow (one caller task) its own box, which every later reading in that flow overwrites.</summary>
    public static StrongBox<long> Attach() => Box.Value = new StrongBox<long>();

    public override long GetTimestamp()
    {
        long now = Stopwatch.GetTimestamp();
        if (Box.Value is { } box)
        {
            box.Value = now;
        }

        return now;
    }

    public override DateTimeOffset GetUtcNow() => new(UtcTicks(GetTimestamp()), TimeSpan.Zero);

    /// <summary>µs since the Unix epoch of a timestamp, as a limiter with this client clock computes it.</summary>
    public long UnixMicroseconds(long timestamp) => (UtcTicks(timestamp) - DateTimeOffset.UnixEpoch.UtcTicks) / 10;

    private long UtcTicks(long timestamp) => _originUtcTicks + (long)((timestamp - _originTimestamp) * TicksPerTimestamp);
}
