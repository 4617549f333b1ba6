using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects;

/// <summary>
/// One attempt through the limiter's concrete (sealed) type. Each implementation is a struct, so every generic loop
/// instantiated over it is compiled separately: each limiter gets its own call site and its own PGO profile, as it would
/// in an application that uses one limiter type, instead of all seven sharing one polymorphic call site.
/// </summary>
internal interface IAcquirer
{
    static abstract LimiterKind Kind { get; }

    static abstract RateLimitLease Acquire(RateLimiter limiter);
}
