using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Limiters;

namespace RateEngine;

/// <summary>
/// A lock-free drop-in for the in-box <see cref="TokenBucketRateLimiter"/>: it takes the same
/// <see cref="TokenBucketRateLimiterOptions"/>, validates them the same way and makes the same decisions: a bucket of
/// <c>TokenLimit</c> tokens refilled with <c>TokensPerPeriod</c> tokens per <c>ReplenishmentPeriod</c>.
/// </summary>
/// <remarks>
/// <para>The bucket is one word (the generic cell rate algorithm), so tokens accrue continuously and exactly instead of
/// in timer-sized steps. For any interval of length T it admits at most <c>TokenLimit + rate * T</c> tokens.</para>
/// <para>With <c>AutoReplenishment = false</c>, <c>TryReplenish</c> credits the time elapsed since the last credit, as
/// the in-box limiter does, including its rule that time spent full is not credited until the bucket has been drawn.</para>
/// <para>A zero-token probe succeeds when at least one whole token is available, as with the in-box bucket.</para>
/// </remarks>
public sealed class LockFreeTokenBucketRateLimiter : RateEngineLimiter
{
    /// <summary>Creates the limiter on <see cref="TimeProvider.System"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public LockFreeTokenBucketRateLimiter(TokenBucketRateLimiterOptions options)
        : this(options, TimeProvider.System)
    {
    }

    /// <summary>Creates the limiter on <paramref name="timeProvider"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public LockFreeTokenBucketRateLimiter(TokenBucketRateLimiterOptions options, TimeProvider timeProvider)
        : base(LimiterParts.Create<TokenBucketDefinition, TokenBucketRateLimiterOptions, TokenBucket, long>(options, timeProvider))
    {
    }

    /// <summary>
    /// Creates the limiter on <paramref name="timeProvider"/>, handing its tokens out from per-core blocks: for one bucket
    /// that many threads hit at once (see <see cref="PerCoreReservationOptions"/> for what it keeps and costs). With blocks,
    /// its leases' tokens cannot be given back early: a token bucket undoes an admission only while nobody has taken since
    /// (with <see cref="PerCoreReservationOptions.MaxBlockSize"/> 1 it is the bucket without blocks, refunds included).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/>, <paramref name="perCore"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public LockFreeTokenBucketRateLimiter(TokenBucketRateLimiterOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider)
        : base(LimiterParts.CreatePerCoreBucket(options, perCore, timeProvider))
    {
    }

    /// <inheritdoc />
    protected override RateLimitLease AttemptAcquireCore(int permitCount) => Host switch
    {
        AlgorithmHost<TokenBucket, long> single => AttemptAcquire(new SingleHostCall<TokenBucket, long>(single), permitCount),
        PerCoreBucketHost perCore => AttemptAcquire(new PerCoreBucketHostCall(perCore), permitCount),
        _ => base.AttemptAcquireCore(permitCount),
    };
}
