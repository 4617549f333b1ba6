namespace RateEngine.Policies;

/// <summary>The algorithm behind a <see cref="PolicyRule"/>.</summary>
internal enum PolicyRuleKind
{
    FixedWindow,
    SlidingWindowCounter,
    SlidingWindowLog,
    TokenBucket,
    Calendar,
    Concurrency,
}
