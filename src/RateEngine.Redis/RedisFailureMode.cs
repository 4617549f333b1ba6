namespace RateEngine.Redis;

/// <summary>What a Redis limiter answers when Redis does not (an error, a timeout, or the circuit open after one).</summary>
public enum RedisFailureMode
{
    /// <summary>Refuse, with a reason naming the failure (the default: a cap must hold).</summary>
    FailClosed,

    /// <summary>Admit, unlimited, until Redis answers again.</summary>
    FailOpen,

    /// <summary>
    /// Enforce <see cref="RedisLimiterOptions.LocalFallbackShare"/> of each key's limit in process (the same algorithm,
    /// on this node alone) until Redis answers again: with N nodes and a share of 1/N, the fleet stays within the cap
    /// during an outage, counted from its start, for limits of at least N (a share rounds down to at least 1 permit; a
    /// bucket's refill keeps at least 1 token and refills that much less often instead).
    /// <see cref="RedisLimiterOptions.LocalFallbackLiveNodes"/> derives the share from the live node count instead.
    /// </summary>
    LocalFallback,
}
