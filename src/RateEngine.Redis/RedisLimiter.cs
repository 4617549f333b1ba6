using System.Threading.RateLimiting;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using RateEngine.Redis.Scripts;

namespace RateEngine.Redis;

/// <summary>
/// Partitioned limiters whose state lives on Redis, exact across every node (exact mode): each acquire is one Lua script
/// that reads the server's clock, decides and writes in one atomic step. The result is the BCL's
/// <see cref="PartitionedRateLimiter{TResource}"/>, so ASP.NET Core and <c>CreateChained</c> accept it.
/// </summary>
/// <remarks>
/// <para>The guarantees are those of the in-process algorithms (src/DESIGN.md), on the Redis server's clock in
/// microseconds: the fixed window's windows are aligned to the Unix epoch; the bucket refills continuously (in any
/// interval of length T at most <c>TokenLimit + rate × T</c>); the counter and the log never pass the limit in any
/// interval of length W. None of them queues (the options' <c>QueueLimit</c> must be 0), and disposing a lease gives
/// nothing back. Each key written has a TTL of its window (or of the bucket's time to refill).</para>
/// <para>Options are resolved per partition key: in exact mode on every call; in the hybrid mode when a key's local state
/// is made on a node (its first use there, or its first after it was idle), as the in-process partitioned limiters resolve
/// a key's options when its state is created. Return a shared instance: each is validated once.</para>
/// <para>A script that fails on Redis (<c>ERR</c>, <c>WRONGTYPE</c>: a key of another type under the prefix, a bug) makes
/// the acquire throw <see cref="InvalidOperationException"/> (in <c>AcquireAsync</c>, fault its task): Redis answered, so
/// it is not an outage, and the failure mode does not answer for it.</para>
/// </remarks>
public static class RedisLimiter
{
    /// <summary>
    /// The largest permit limit of a sliding-window log on Redis (10,000). The log keeps one sorted-set member per permit
    /// (about 100 bytes of Redis memory each), and one acquire adds its permits, or expiry removes a window's worth, in one
    /// script, which blocks the server for all its clients meanwhile (about 4 µs a member): at this limit about 40 ms, at
    /// the in-process log's limit (2^24) over a minute. For larger limits use the sliding-window counter or the fixed window.
    /// </summary>
    public const int MaxSlidingWindowLogPermitLimit = 10_000;

    /// <summary>A fixed window per key, aligned to the Unix epoch.</summary>
    /// <exception cref="ArgumentNullException">A delegate or the options are null.</exception>
    /// <exception cref="ArgumentException">The options are invalid (no connection, blank prefix, ...).</exception>
    public static PartitionedRateLimiter<TResource> CreateFixedWindow<TResource>(
        Func<TResource, string> keySelector, Func<string, FixedWindowRateLimiterOptions> optionsResolver, RedisLimiterOptions options) =>
        new RedisPartitionedLimiter<TResource, FixedWindowRateLimiterOptions>(keySelector, optionsResolver, rule => new FixedWindowRule(rule), options, servesHybrid: true,
            (resolver, share, time) => PartitionedLimiter.CreateFixedWindow<string, string>(
                key => key,
                key => resolver(key) switch { var full => new FixedWindowRateLimiterOptions { PermitLimit = share.Of(full.PermitLimit), Window = full.Window } },
                Local(time)));

    /// <summary>A token bucket per key, refilled continuously at <c>TokensPerPeriod</c> per <c>ReplenishmentPeriod</c>.</summary>
    /// <inheritdoc cref="CreateFixedWindow{TResource}" path="/exception"/>
    public static PartitionedRateLimiter<TResource> CreateTokenBucket<TResource>(
        Func<TResource, string> keySelector, Func<string, TokenBucketRateLimiterOptions> optionsResolver, RedisLimiterOptions options) =>
        new RedisPartitionedLimiter<TResource, TokenBucketRateLimiterOptions>(keySelector, optionsResolver, rule => new TokenBucketRule(rule), options, servesHybrid: false,
            (resolver, share, time) => PartitionedLimiter.CreateTokenBucket<string, string>(
                key => key,
                key => resolver(key) switch
                {
                    var full => new TokenBucketRateLimiterOptions
                    {
                        TokenLimit = share.Of(full.TokenLimit),
                        TokensPerPeriod = share.Of(full.TokensPerPeriod),
                        ReplenishmentPeriod = share.Stretch(full.ReplenishmentPeriod, full.TokensPerPeriod),
                    },
                },
                Local(time)));

    /// <summary>A conservative segmented sliding window per key (a permit counts up to one segment longer than the window).</summary>
    /// <inheritdoc cref="CreateFixedWindow{TResource}" path="/exception"/>
    public static PartitionedRateLimiter<TResource> CreateSlidingWindowCounter<TResource>(
        Func<TResource, string> keySelector, Func<string, SlidingWindowCounterRateLimiterOptions> optionsResolver, RedisLimiterOptions options) =>
        new RedisPartitionedLimiter<TResource, SlidingWindowCounterRateLimiterOptions>(keySelector, optionsResolver, rule => new SlidingWindowCounterRule(rule), options, servesHybrid: true,
            (resolver, share, time) => PartitionedLimiter.CreateSlidingWindowCounter<string, string>(
                key => key,
                key => resolver(key) switch
                {
                    var full => new SlidingWindowCounterRateLimiterOptions { PermitLimit = share.Of(full.PermitLimit), Window = full.Window, SegmentsPerWindow = full.SegmentsPerWindow },
                },
                Local(time)));

    /// <summary>
    /// An exact sliding-window log per key: one sorted-set member per permit of the limit, which is at most
    /// <see cref="MaxSlidingWindowLogPermitLimit"/>. Options are resolved per key, so a larger limit throws
    /// <see cref="ArgumentOutOfRangeException"/> from the key's acquires.
    /// </summary>
    /// <inheritdoc cref="CreateFixedWindow{TResource}" path="/exception"/>
    public static PartitionedRateLimiter<TResource> CreateSlidingWindowLog<TResource>(
        Func<TResource, string> keySelector, Func<string, SlidingWindowLogRateLimiterOptions> optionsResolver, RedisLimiterOptions options) =>
        new RedisPartitionedLimiter<TResource, SlidingWindowLogRateLimiterOptions>(keySelector, optionsResolver, rule => new SlidingWindowLogRule(rule), options, servesHybrid: false,
            (resolver, share, time) => PartitionedLimiter.CreateSlidingWindowLog<string, string>(
                key => key,
                key => resolver(key) switch { var full => new SlidingWindowLogRateLimiterOptions { PermitLimit = share.Of(full.PermitLimit), Window = full.Window } },
                Local(time)));

    /// <summary>
    /// A health check for a limiter made here (register it with <c>AddHealthChecks().AddCheck(name, check)</c>): Healthy while
    /// Redis answers a <c>PING</c> within the limiter's <see cref="RedisLimiterOptions.SyncTimeout"/> and no call has failed
    /// since the last success; otherwise Unhealthy in <see cref="RedisFailureMode.FailClosed"/> (requests are refused) and
    /// Degraded in the other modes (requests are still served). Its data never carry a partition key.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="limiter"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="limiter"/> was not made by <see cref="RedisLimiter"/>.</exception>
    public static IHealthCheck HealthCheck<TResource>(PartitionedRateLimiter<TResource> limiter)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        return limiter is IRedisLimiterHealth redis
            ? new RedisLimiterHealthCheck(redis)
            : throw new ArgumentException("The limiter was not made by RedisLimiter: its health is not Redis's.", nameof(limiter));
    }

    /// <summary>The health of a <see cref="RedisRatePolicy{TContext}"/>, as <see cref="HealthCheck{TResource}(PartitionedRateLimiter{TResource})"/> tells a limiter's.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="policy"/> is null.</exception>
    public static IHealthCheck HealthCheck<TContext>(RedisRatePolicy<TContext> policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        return new RedisLimiterHealthCheck(policy);
    }

    private static PartitionedLimiterOptions Local(TimeProvider time) => new() { TimeProvider = time };
}
