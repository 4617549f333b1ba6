using System.Threading.RateLimiting;
using RateEngine.Redis;

namespace RateEngine.Benchmarks.Redis;

/// <summary>Script calls a Redis limiter has made (acquires in exact mode; reservations and returns in hybrid).</summary>
internal static class RedisCalls
{
    public static long Of(PartitionedRateLimiter<string> limiter) =>
        ((RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions>)limiter).RoundTrips;
}
