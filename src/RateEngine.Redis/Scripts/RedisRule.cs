using StackExchange.Redis;

namespace RateEngine.Redis.Scripts;

/// <summary>One algorithm's limits for a key, validated and turned into its script's parameters (µs on the clock).</summary>
internal abstract class RedisRule
{
    /// <summary>
    /// The largest amount the scripts keep exact: Lua's numbers are doubles, exact for integers below 2^53.
    /// </summary>
    public const long MaxExact = 1L << 53;

    protected const long TicksPerMicrosecond = TimeSpan.TicksPerMillisecond / 1000;

    /// <summary>The most permits one call may ask for (more is an <see cref="ArgumentOutOfRangeException"/>, as in-box).</summary>
    public abstract long PermitLimit { get; }

    /// <summary>The key's suffix, naming the algorithm (a key written by one algorithm is never read by another).</summary>
    public abstract string Suffix { get; }

    public abstract LuaScript Script { get; }

    /// <summary>The script's parameters; <paramref name="now"/> is the client's µs, or -1 for the server's clock.</summary>
    public abstract object Parameters(RedisKey key, long now, long permits, string? nonce);

    /// <summary>Whether the script's members need a unique nonce per call (the log's members).</summary>
    public virtual bool NeedsNonce => false;

    protected static long Microseconds(TimeSpan span, string name)
    {
        long micros = span.Ticks / TicksPerMicrosecond;
        if (micros < 1 || micros >= MaxExact)
        {
            throw new ArgumentOutOfRangeException(name, span, $"{name} must be at least 1 microsecond and below 2^53 microseconds.");
        }

        return micros;
    }

    protected static void ThrowIfQueued(int queueLimit, string options)
    {
        if (queueLimit != 0)
        {
            throw new ArgumentException($"{options}.QueueLimit must be 0: a Redis limiter decides at once and does not queue.", nameof(queueLimit));
        }
    }
}
