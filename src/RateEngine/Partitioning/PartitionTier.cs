using RateEngine.Algorithms;
using RateEngine.Limiters;

namespace RateEngine.Partitioning;

/// <summary>
/// The shared, immutable settings of every key that resolves to the same options: its algorithm and queue settings.
/// Tiers are few; entries point at theirs.
/// </summary>
internal sealed class PartitionTier<TAlgorithm, TState>(TAlgorithm algorithm, QueueSettings queue)
    where TAlgorithm : struct, IRateAlgorithm<TState>
{
    public readonly TAlgorithm Algorithm = algorithm;
    public readonly QueueSettings Queue = queue;

    /// <summary>The tier of one options instance, made by the algorithm's definition on the partitioned limiter's clock.</summary>
    public static PartitionTier<TAlgorithm, TState> Create<TDefinition, TOptions>(TOptions options, Timing.LimiterClock clock)
        where TDefinition : IAlgorithmDefinition<TOptions, TAlgorithm, TState>
        where TOptions : class
    {
        TOptions valid = TDefinition.Validate(options);
        return new PartitionTier<TAlgorithm, TState>(TDefinition.CreateAlgorithm(valid, clock), TDefinition.QueueSettings(valid));
    }

    /// <summary>Throws when a request asks for more permits than the tier's limit.</summary>
    public void CheckPermitCount(int permitCount) =>
        ThrowHelper.CheckPermitCount(permitCount, Algorithm.PermitLimit, Queue.PermitCountName);
}
