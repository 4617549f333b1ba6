namespace RateEngine.Redis;

/// <summary>What a Redis limiter answers when Redis does not (an error, a timeout, or the circuit open after one).</summary>
public enum RedisFailureMode
{
    /// <summary>Refuse, with a reason naming the failure (the default: a cap must hold).</summary>
    FailClosed,

    /// <summary>Admit, unlimited, until Redis answers again.</summary>
    FailOpen,
}
