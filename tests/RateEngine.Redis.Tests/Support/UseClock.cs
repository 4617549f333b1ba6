namespace RateEngine.Redis.Tests.Support;

/// <summary>
/// The real-time clock in whole µs since the Unix epoch (the clock Redis's <c>TIME</c> reads, on one host), remembering
/// per thread the last value read: the hybrid mode checks a block's expiry with the last read of its take.
/// </summary>
internal sealed class UseClock : TimeProvider
{
    public static readonly UseClock Instance = new();

    [ThreadStatic]
    private static long t_lastRead;

    public static long LastRead => t_lastRead;

    public override long TimestampFrequency => 1_000_000;

    public override long GetTimestamp()
    {
        long micros = (System.GetUtcNow().UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / 10;
        t_lastRead = micros;
        return micros;
    }
}
