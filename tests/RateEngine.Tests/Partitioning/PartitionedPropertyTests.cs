using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Partitioning;

/// <summary>
/// Per-key guarantees over random interleavings of keys, time, waits and eviction sweeps: an evicted and re-created
/// key never admits more than its cap in any window, and eviction never changes a decision.
/// </summary>
public class PartitionedPropertyTests
{
    private const int Cases = 1000;

    [Property(MaxTest = Cases)]
    public Property SlidingWindowLog_KeysTimeAndEvictions_EveryKeyKeepsItsGuarantee() =>
        Prop.ForAll(PartitionGenerators.Everything(LimiterKind.Log), PartitionedScenarioRunner.EveryKeyKeepsItsGuarantee);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounter_KeysTimeAndEvictions_EveryKeyKeepsItsGuarantee() =>
        Prop.ForAll(PartitionGenerators.Everything(LimiterKind.Counter), PartitionedScenarioRunner.EveryKeyKeepsItsGuarantee);

    [Property(MaxTest = Cases)]
    public Property FixedWindow_KeysTimeAndEvictions_EveryKeyKeepsItsGuarantee() =>
        Prop.ForAll(PartitionGenerators.Everything(LimiterKind.Fixed), PartitionedScenarioRunner.EveryKeyKeepsItsGuarantee);

    [Property(MaxTest = Cases)]
    public Property TokenBucket_KeysTimeAndEvictions_EveryKeyKeepsItsGuarantee() =>
        Prop.ForAll(PartitionGenerators.Everything(LimiterKind.Bucket), PartitionedScenarioRunner.EveryKeyKeepsItsGuarantee);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounter_HotKeysWithPerCoreBlocks_EveryKeyKeepsItsGuarantee() =>
        Prop.ForAll(PartitionGenerators.HotKeys(LimiterKind.Counter), PartitionedScenarioRunner.EveryKeyKeepsItsGuarantee);

    [Property(MaxTest = Cases)]
    public Property FixedWindow_HotKeysWithPerCoreBlocks_EveryKeyKeepsItsGuarantee() =>
        Prop.ForAll(PartitionGenerators.HotKeys(LimiterKind.Fixed), PartitionedScenarioRunner.EveryKeyKeepsItsGuarantee);

    [Property(MaxTest = Cases)]
    public Property TokenBucket_HotKeysWithPerCoreBlocks_EveryKeyKeepsItsGuarantee() =>
        Prop.ForAll(PartitionGenerators.HotKeys(LimiterKind.Bucket), PartitionedScenarioRunner.EveryKeyKeepsItsGuarantee);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowLog_KeysTimeAndEvictions_EveryKeyDecidesLikeItsModel() =>
        Prop.ForAll(PartitionGenerators.Decisions(LimiterKind.Log), PartitionedScenarioRunner.EveryKeyDecidesLikeItsModel);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounter_KeysTimeAndEvictions_EveryKeyDecidesLikeItsModel() =>
        Prop.ForAll(PartitionGenerators.Decisions(LimiterKind.Counter), PartitionedScenarioRunner.EveryKeyDecidesLikeItsModel);

    [Property(MaxTest = Cases)]
    public Property FixedWindow_KeysTimeAndEvictions_EveryKeyDecidesLikeItsModel() =>
        Prop.ForAll(PartitionGenerators.Decisions(LimiterKind.Fixed), PartitionedScenarioRunner.EveryKeyDecidesLikeItsModel);

    [Property(MaxTest = Cases)]
    public Property TokenBucket_KeysTimeAndEvictions_EveryKeyDecidesLikeItsModel() =>
        Prop.ForAll(PartitionGenerators.Decisions(LimiterKind.Bucket), PartitionedScenarioRunner.EveryKeyDecidesLikeItsModel);
}
