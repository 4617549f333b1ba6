using RateEngine.Algorithms;
using RateEngine.Limiters;

namespace RateEngine.Partitioning;

/// <summary>
/// The shared, immutable settings of every key that resolves to the same options: its algorithm and queue settings.
/// Tiers are few; entries point at theirs.
/// </summary>
internal sealed class PartitionTier<TAlgorithm, TState>(TAlgorithm algorithm, QueueSettings queue, Func<StateCell<TState>, long, PerCoreHost>? hotHost = null)
    where TAlgorithm : struct, IRateAlgorithm<TState>
{
    public readonly TAlgorithm Algorithm = algorithm;
    public readonly QueueSettings Queue = queue;

    /// <summary>
    /// Per-core blocks over a hot key's entry, started at the promoting admission's clock reading (a read of its own could
    /// throw after that admission was counted); null when its keys are never promoted (no option, or a small limit).
    /// </summary>
    public readonly Func<StateCell<TState>, long, PerCoreHost>? HotHost = hotHost;

    /// <summary>The tier of one options instance, made by the algorithm's definition on the partitioned limiter's clock.</summary>
    public static PartitionTier<TAlgorithm, TState> Create<TDefinition, TOptions>(
        TOptions options,
        Timing.LimiterClock clock,
        PerCoreReservationOptions? perCore,
        Func<TAlgorithm, PerCoreReservationOptions, StateCell<TState>, PerCoreHost>? hotHost)
        where TDefinition : IAlgorithmDefinition<TOptions, TAlgorithm, TState>
        where TOptions : class
    {
        TOptions valid = TDefinition.Validate(options);
        TAlgorithm algorithm = TDefinition.CreateAlgorithm(valid, clock);
        Func<StateCell<TState>, long, PerCoreHost>? hot = perCore is not null && hotHost is not null && algorithm.PermitLimit >= perCore.HotKeyLimitFloor
            ? (cell, now) =>
            {
                PerCoreHost host = hotHost(algorithm, perCore, cell);
                host.ChooseStripe = perCore.ChooseStripe;
                host.StartAt(now);
                return host;
            }
            : null;
        return new PartitionTier<TAlgorithm, TState>(algorithm, TDefinition.QueueSettings(valid), hot);
    }

    /// <summary>Throws when a request asks for more permits than the tier's limit.</summary>
    public void CheckPermitCount(int permitCount) =>
        ThrowHelper.CheckPermitCount(permitCount, Algorithm.PermitLimit, Queue.PermitCountName);
}
