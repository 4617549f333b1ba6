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

    /// <summary>
    /// The key's suffix: the algorithm and its shape (window, segments, refill rate), not its limit. A key written by one
    /// algorithm or shape is never read by another: nodes that disagree on a key's window (a rolling deploy that changed
    /// it) each keep their own count, where one writing segments of another scale into the other's key would wipe its
    /// history. A changed limit keeps the count, as in process.
    /// </summary>
    public abstract string Suffix { get; }

    /// <summary>A limiter's key on Redis for one partition: the partition hash-tagged, so all of its keys share a cluster slot.</summary>
    public static string KeyOf(string keyPrefix, string partitionKey, RedisRule rule) => $"{keyPrefix}:{{{partitionKey}}}:{rule.Suffix}";

    public abstract LuaScript Script { get; }

    /// <summary>The script's parameters; <paramref name="now"/> is the client's µs, or -1 for the server's clock.</summary>
    public abstract object Parameters(RedisKey key, long now, long permits, string? nonce);

    /// <summary>Whether the script's members need a unique nonce per call (the log's members).</summary>
    public virtual bool NeedsNonce => false;

    /// <summary>The hybrid mode's reservation script; null for an algorithm the hybrid mode does not serve.</summary>
    public virtual LuaScript? ReserveScript => null;

    /// <summary>The hybrid mode's script that gives back a block's unused permits.</summary>
    public virtual LuaScript? ReturnScript => null;

    /// <summary>The reservation's parameters: at least <paramref name="need"/> permits or none, at most <paramref name="want"/>.</summary>
    public virtual object ReserveParameters(RedisKey key, long now, long need, long want) => throw new NotSupportedException();

    /// <summary>Parameters to give back <paramref name="returned"/> permits counted in <paramref name="period"/>.</summary>
    public virtual object ReturnParameters(RedisKey key, long period, long returned) => new ReturnArguments(key, period, returned);

    private sealed record ReturnArguments(RedisKey Key, long Period, long Returned);

    /// <summary>
    /// <paramref name="span"/> in whole microseconds, rounded up as the in-process limiters round to their clock's ticks: a
    /// window or period rounded down would be shorter than configured, and admit faster than the limit says.
    /// </summary>
    protected static long Microseconds(TimeSpan span, string name)
    {
        long micros = CeilingMicroseconds(span);
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

    /// <summary><paramref name="span"/> in microseconds, rounded up (never overflows, unlike adding 9 ticks first).</summary>
    internal static long CeilingMicroseconds(TimeSpan span) =>
        (span.Ticks / TicksPerMicrosecond) + (span.Ticks % TicksPerMicrosecond > 0 ? 1 : 0);
}
