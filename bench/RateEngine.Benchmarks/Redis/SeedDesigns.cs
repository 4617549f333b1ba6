using System.Globalization;
using System.Threading.RateLimiting;
using StackExchange.Redis;

namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// The two designs issue 11 names as the seeds a Redis limiter is usually written from, kept here as deliberately flawed
/// baselines (never in the library): a sliding-window log in a sorted set, one member per admission, scored in µs on the
/// node's clock.
/// </summary>
internal abstract class SeedLimiter(IDatabase database, string prefix, long limit, TimeSpan window, StampClock clock, int node)
    : PartitionedRateLimiter<string>
{
    private long _members;

    protected IDatabase Database { get; } = database;

    protected long Limit { get; } = limit;

    protected TimeSpan Window { get; } = window;

    protected long WindowMicroseconds { get; } = window.Ticks / 10;

    public override RateLimiterStatistics? GetStatistics(string resource) => null;

    protected RedisKey KeyOf(string resource) => prefix + resource;

    /// <summary>The decision's time (a reading the saturation runs see in the caller's stamp box).</summary>
    protected long Now() => clock.UnixMicroseconds(clock.GetTimestamp());

    /// <summary>A member unique across nodes, as a log needs (two admissions in one µs are two members).</summary>
    protected RedisValue Member() => string.Create(CultureInfo.InvariantCulture, $"{node}:{Interlocked.Increment(ref _members)}");

    protected override RateLimitLease AttemptAcquireCore(string resource, int permitCount) =>
        AcquireAsyncCore(resource, permitCount, CancellationToken.None).AsTask().GetAwaiter().GetResult();

    protected static RateLimitLease Lease(bool acquired) => acquired ? SeedLease.Acquired : SeedLease.Refused;

    private sealed class SeedLease(bool acquired) : RateLimitLease
    {
        public static readonly SeedLease Acquired = new(true);
        public static readonly SeedLease Refused = new(false);

        public override bool IsAcquired { get; } = acquired;

        public override IEnumerable<string> MetadataNames => [];

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = null;
            return false;
        }
    }
}

/// <summary>
/// Check-then-add, as tutorials write it: <c>ZCOUNT key (now-W now</c>, then <c>ZADD</c> if it was below the limit. Two round
/// trips per admission, and not atomic: callers that count before any of them adds all admit (over-admission).
/// </summary>
internal sealed class CheckThenAddLimiter(IDatabase database, string prefix, long limit, TimeSpan window, StampClock clock, int node)
    : SeedLimiter(database, prefix, limit, window, clock, node)
{
    protected override async ValueTask<RateLimitLease> AcquireAsyncCore(string resource, int permitCount, CancellationToken cancellationToken)
    {
        long now = Now();
        RedisKey key = KeyOf(resource);
        long count = await Database.SortedSetLengthAsync(key, now - WindowMicroseconds, now, Exclude.Start).ConfigureAwait(false);
        if (count + permitCount > Limit)
        {
            return Lease(false);
        }

        await Database.SortedSetAddAsync(key, Member(), now).ConfigureAwait(false);
        return Lease(true);
    }
}

/// <summary>
/// One MULTI per call that records every attempt: <c>ZREMRANGEBYSCORE</c> (drop what left the window), <c>ZCARD</c>,
/// <c>ZADD</c>, <c>EXPIRE</c>, then admit if the count before this attempt was below the limit. Atomic and one round trip,
/// but a refused attempt stays in the log, so a caller that keeps trying keeps its own window full (under-admission).
/// </summary>
internal sealed class MultiPerCallLimiter(IDatabase database, string prefix, long limit, TimeSpan window, StampClock clock, int node)
    : SeedLimiter(database, prefix, limit, window, clock, node)
{
    /// <summary>ZREMRANGEBYSCORE, ZCARD, ZADD and EXPIRE travel inside each MULTI … EXEC.</summary>
    public const int QueuedPerTransaction = 4;

    private readonly TimeSpan _expiry = TimeSpan.FromSeconds(Math.Ceiling(window.TotalSeconds)); // whole seconds: EXPIRE, as tutorials write it

    protected override async ValueTask<RateLimitLease> AcquireAsyncCore(string resource, int permitCount, CancellationToken cancellationToken)
    {
        long now = Now();
        RedisKey key = KeyOf(resource);
        ITransaction transaction = Database.CreateTransaction();
        Task<long> trimmed = transaction.SortedSetRemoveRangeByScoreAsync(key, double.NegativeInfinity, now - WindowMicroseconds);
        Task<long> count = transaction.SortedSetLengthAsync(key);
        Task<bool> added = transaction.SortedSetAddAsync(key, Member(), now);
        Task<bool> expires = transaction.KeyExpireAsync(key, _expiry);
        await transaction.ExecuteAsync().ConfigureAwait(false);
        await Task.WhenAll(trimmed, added, expires).ConfigureAwait(false);
        return Lease(await count.ConfigureAwait(false) + permitCount <= Limit);
    }
}
