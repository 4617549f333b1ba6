using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Limiters;

/// <summary>What a concrete limiter hands to <see cref="RateEngineLimiter"/>: its algorithm, clock, queue settings and lease counters.</summary>
internal sealed record LimiterParts(AlgorithmHost Host, LimiterClock Clock, QueueSettings Queue, LeaseCounters Counters)
{
    /// <summary>The parts of a single limiter of one algorithm: validated options, its clock, a fresh state.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static LimiterParts Create<TDefinition, TOptions, TAlgorithm, TState>(TOptions options, TimeProvider timeProvider)
        where TDefinition : IAlgorithmDefinition<TOptions, TAlgorithm, TState>
        where TOptions : class
        where TAlgorithm : struct, IRateAlgorithm<TState>
    {
        TOptions valid = TDefinition.Validate(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        LimiterClock clock = TDefinition.CreateClock(valid, timeProvider);
        var host = new AlgorithmHost<TAlgorithm, TState>(TDefinition.CreateAlgorithm(valid, clock));
        return new LimiterParts(host, clock, TDefinition.QueueSettings(valid), new LeaseCounters(host.Owned));
    }

    /// <summary>The parts of a single window limiter whose permits are handed out from per-core blocks.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/>, <paramref name="perCore"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static LimiterParts CreatePerCore<TDefinition, TOptions, TAlgorithm, TState>(
        TOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider)
        where TDefinition : IAlgorithmDefinition<TOptions, TAlgorithm, TState>
        where TOptions : class
        where TAlgorithm : struct, IPeriodBlockAlgorithm<TState> =>
        CreatePerCore<TDefinition, TOptions, TAlgorithm, TState>(
            options, perCore, timeProvider, static (algorithm, valid) => new StripedHost<TAlgorithm, TState>(algorithm, valid));

    /// <summary>The parts of a single token bucket whose tokens are handed out from per-core blocks.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/>, <paramref name="perCore"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static LimiterParts CreatePerCoreBucket(TokenBucketRateLimiterOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider) =>
        CreatePerCore<TokenBucketDefinition, TokenBucketRateLimiterOptions, TokenBucket, long>(
            options, perCore, timeProvider, static (bucket, valid) => new PerCoreBucketHost(bucket, valid));

    /// <summary>The parts of a single sliding-window log whose permits are handed out from per-core blocks.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="options"/>, <paramref name="perCore"/> or <paramref name="timeProvider"/> is null.</exception>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static LimiterParts CreatePerCoreLog(SlidingWindowLogRateLimiterOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider) =>
        CreatePerCore<SlidingWindowLogDefinition, SlidingWindowLogRateLimiterOptions, SlidingWindowLog, LogState>(
            options,
            perCore,
            timeProvider,
            static (log, valid) => new StripedHost<BlockPeriodLog, LogState>(new BlockPeriodLog((int)log.PermitLimit, log.RefillTicks), valid));

    private static LimiterParts CreatePerCore<TDefinition, TOptions, TAlgorithm, TState>(
        TOptions options, PerCoreReservationOptions perCore, TimeProvider timeProvider, Func<TAlgorithm, PerCoreReservationOptions, AlgorithmHost> host)
        where TDefinition : IAlgorithmDefinition<TOptions, TAlgorithm, TState>
        where TOptions : class
        where TAlgorithm : struct, IRateAlgorithm<TState>
    {
        TOptions valid = TDefinition.Validate(options);
        ArgumentNullException.ThrowIfNull(perCore);
        perCore.ThrowIfInvalid(nameof(perCore), "MaxBlockSize");
        ArgumentNullException.ThrowIfNull(timeProvider);
        LimiterClock clock = TDefinition.CreateClock(valid, timeProvider);
        TAlgorithm algorithm = TDefinition.CreateAlgorithm(valid, clock);
        if (perCore.MaxBlockSize == 1)
        {
            // No blocks: the limiter itself.
            var single = new AlgorithmHost<TAlgorithm, TState>(algorithm);
            return new LimiterParts(single, clock, TDefinition.QueueSettings(valid), new LeaseCounters(single.Owned));
        }

        AlgorithmHost blocks = host(algorithm, perCore);
        return new LimiterParts(blocks, clock, TDefinition.QueueSettings(valid), new LeaseCounters(blocks as ISuccessCount));
    }
}
