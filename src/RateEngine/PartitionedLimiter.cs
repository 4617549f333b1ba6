using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Limiters;
using RateEngine.Partitioning;

namespace RateEngine;

/// <summary>
/// Creates partitioned limiters: one limit per key (per IP, per user, per API key, per tool), for millions of keys,
/// with compact per-key state, lock-free lookups, exact replenishment, idle eviction and a memory bound.
/// </summary>
/// <remarks>
/// <para>The options resolver gives each key its limit; keys that get the same options instance share one tier (so
/// return a few shared instances, one per tier, rather than a new object per key). It runs once per key creation.
/// Options are validated like the single limiters' and copied on first use. Replenishment is always automatic:
/// each key's state is computed from the clock at acquire time, so <c>AutoReplenishment</c> is ignored.</para>
/// <para>Per-key <c>GetStatistics</c> reports the key's available and queued permits; the lease totals it reports are
/// the whole limiter's (per-key totals would double a key's memory).</para>
/// <para>Memory: about 32 bytes of state per key for the fixed window and the token bucket, plus the table slot
/// (the key and a reference); the sliding-window counter adds 8 bytes per segment and the log 24 per permit.</para>
/// </remarks>
public static class PartitionedLimiter
{
    /// <summary>A fixed window per key.</summary>
    /// <exception cref="ArgumentNullException">A delegate is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="options"/> is out of range.</exception>
    public static PartitionedRateLimiter<TResource> CreateFixedWindow<TResource, TKey>(
        Func<TResource, TKey> keySelector,
        Func<TKey, FixedWindowRateLimiterOptions> optionsResolver,
        PartitionedLimiterOptions? options = null,
        IEqualityComparer<TKey>? comparer = null)
        where TKey : notnull =>
        Create<TResource, TKey, FixedWindowDefinition, FixedWindowRateLimiterOptions, FixedWindow, long>(
            keySelector, optionsResolver, options, comparer, static (window, perCore, cell) => new StripedHost<FixedWindow, long>(window, perCore, cell));

    /// <summary>A token bucket per key.</summary>
    /// <exception cref="ArgumentNullException">A delegate is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="options"/> is out of range.</exception>
    public static PartitionedRateLimiter<TResource> CreateTokenBucket<TResource, TKey>(
        Func<TResource, TKey> keySelector,
        Func<TKey, TokenBucketRateLimiterOptions> optionsResolver,
        PartitionedLimiterOptions? options = null,
        IEqualityComparer<TKey>? comparer = null)
        where TKey : notnull =>
        Create<TResource, TKey, TokenBucketDefinition, TokenBucketRateLimiterOptions, TokenBucket, long>(
            keySelector, optionsResolver, options, comparer, static (bucket, perCore, cell) => new PerCoreBucketHost(bucket, perCore, cell));

    /// <summary>A conservative segmented sliding window per key.</summary>
    /// <exception cref="ArgumentNullException">A delegate is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="options"/> is out of range.</exception>
    public static PartitionedRateLimiter<TResource> CreateSlidingWindowCounter<TResource, TKey>(
        Func<TResource, TKey> keySelector,
        Func<TKey, SlidingWindowCounterRateLimiterOptions> optionsResolver,
        PartitionedLimiterOptions? options = null,
        IEqualityComparer<TKey>? comparer = null)
        where TKey : notnull =>
        Create<TResource, TKey, SlidingWindowCounterDefinition, SlidingWindowCounterRateLimiterOptions, SlidingWindowCounter, CounterState>(
            keySelector, optionsResolver, options, comparer, static (counter, perCore, cell) => new StripedHost<SlidingWindowCounter, CounterState>(counter, perCore, cell));

    /// <summary>
    /// An exact sliding-window log per key, for modest limits: a key's first request allocates its log, 24 bytes per permit
    /// of its limit (a limit of 2^24 is 400 MB a key), and up to <see cref="PartitionedLimiterOptions.MaxPartitions"/> keys
    /// may hold one at once. Bound both to what the process can hold; the counter is the choice for large limits.
    /// </summary>
    /// <exception cref="ArgumentNullException">A delegate is null.</exception>
    /// <exception cref="ArgumentException">
    /// <paramref name="options"/> is out of range, or asks for <see cref="PartitionedLimiterOptions.PerCoreReservation"/> with blocks
    /// (a <see cref="PerCoreReservationOptions.MaxBlockSize"/> above 1): a
    /// log key's blocks would need a log of block periods (as <see cref="SlidingWindowLogRateLimiter"/>'s), not the key's own.
    /// </exception>
    public static PartitionedRateLimiter<TResource> CreateSlidingWindowLog<TResource, TKey>(
        Func<TResource, TKey> keySelector,
        Func<TKey, SlidingWindowLogRateLimiterOptions> optionsResolver,
        PartitionedLimiterOptions? options = null,
        IEqualityComparer<TKey>? comparer = null)
        where TKey : notnull =>
        Create<TResource, TKey, SlidingWindowLogDefinition, SlidingWindowLogRateLimiterOptions, SlidingWindowLog, LogState>(
            keySelector, optionsResolver, options, comparer, hotHost: null);

    private static PartitionedRateLimiter<TResource> Create<TResource, TKey, TDefinition, TOptions, TAlgorithm, TState>(
        Func<TResource, TKey> keySelector,
        Func<TKey, TOptions> optionsResolver,
        PartitionedLimiterOptions? options,
        IEqualityComparer<TKey>? comparer,
        Func<TAlgorithm, PerCoreReservationOptions, StateCell<TState>, PerCoreHost>? hotHost)
        where TKey : notnull
        where TDefinition : IAlgorithmDefinition<TOptions, TAlgorithm, TState>
        where TOptions : class
        where TAlgorithm : struct, IRateAlgorithm<TState>
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        ArgumentNullException.ThrowIfNull(optionsResolver);
        PartitionedLimiterOptions settings = Validate(options ?? new PartitionedLimiterOptions());
        if (settings.PerCoreReservation is { MaxBlockSize: > 1 } && hotHost is null)
        {
            throw new ArgumentException("The partitioned sliding-window log does not take PerCoreReservation.", nameof(options));
        }

        PerCoreReservationOptions? perCore = settings.PerCoreReservation is { MaxBlockSize: > 1 } blocks ? blocks : null; // blocks of 1: none

        // One tier per options instance, held weakly: a resolver that allocates per key does not leak tiers.
        var tiers = new ConditionalWeakTable<TOptions, PartitionTier<TAlgorithm, TState>>();
        EnginePartitionedLimiter<TResource, TKey, TAlgorithm, TState>? limiter = null;
        limiter = new EnginePartitionedLimiter<TResource, TKey, TAlgorithm, TState>(
            keySelector,
            key =>
            {
                TOptions keyOptions = optionsResolver(key) ?? throw new InvalidOperationException("The options resolver returned null.");
                return tiers.GetValue(keyOptions, o => PartitionTier<TAlgorithm, TState>.Create<TDefinition, TOptions>(o, limiter!.Clock, perCore, hotHost));
            },
            settings,
            comparer ?? EqualityComparer<TKey>.Default);
        return limiter;
    }

    private static PartitionedLimiterOptions Validate(PartitionedLimiterOptions options)
    {
        OptionsValidation.Positive(options.MaxPartitions, nameof(options.MaxPartitions));
        OptionsValidation.Positive(options.IdleEvictionInterval, nameof(options.IdleEvictionInterval));
        options.PerCoreReservation?.ThrowIfInvalid(nameof(options), "PerCoreReservation.MaxBlockSize");

        return new PartitionedLimiterOptions
        {
            MaxPartitions = options.MaxPartitions,
            IdleEvictionInterval = options.IdleEvictionInterval,
            TimeProvider = options.TimeProvider ?? throw new ArgumentNullException(nameof(options), "PartitionedLimiterOptions.TimeProvider is null."),
            PerCoreReservation = options.PerCoreReservation is { } blocks
                ? new PerCoreReservationOptions
                {
                    MaxBlockSize = blocks.MaxBlockSize,
                    Stripes = blocks.Stripes,
                    HotKeyLimitFloor = blocks.HotKeyLimitFloor,
                    HotKeySampling = blocks.HotKeySampling,
                    HotKeyStreak = blocks.HotKeyStreak,
                    ChooseStripe = blocks.ChooseStripe,
                }
                : null,
        };
    }
}
