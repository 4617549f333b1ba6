namespace RateEngine.Redis;

/// <summary>One script's answer: admitted or not, when to retry (µs), permits left, and the decision's time (µs on its clock).</summary>
internal readonly record struct RedisDecision(bool Admitted, long RetryAfterMicroseconds, long Remaining, long StampMicroseconds);
