using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Properties;

/// <summary>
/// "Caps are never exceeded", checked over random operation sequences (acquires, waits, cancellations, refunds, a clock
/// moving both ways). 1,000 cases each; a failure prints FsCheck's replay seed and the scenario.
/// </summary>
public class GuaranteePropertyTests
{
    private const int Cases = 1000;

    [Property(MaxTest = Cases)]
    public Property SlidingWindowLog_RandomOperations_NeverExceedsLimitInAnyWindow() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Log), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounter_RandomOperations_NeverExceedsLimitInAnyWindow() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Counter), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property FixedWindow_RandomOperations_NeverExceedsLimitInAnyAlignedWindow() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Fixed), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property TokenBucket_RandomOperations_NeverExceedsBurstPlusRate() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Bucket), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property PerCoreSlidingWindowLog_RandomOperations_NeverExceedsLimitInAnyWindow() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Log, perCore: true), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property PerCoreSlidingWindowLog_BlocksUsedAtTheirPeriodsEdges_NeverExceedsLimitInAnyWindow() =>
        Prop.ForAll(Generators.LogPeriodEdges(), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property PerCoreFixedWindow_RandomOperations_NeverExceedsLimitInAnyAlignedWindow() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Fixed, perCore: true), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property PerCoreSlidingWindowCounter_RandomOperations_NeverExceedsLimitInAnyWindow() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Counter, perCore: true), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property PerCoreTokenBucket_RandomOperations_NeverExceedsBurstPlusRate() =>
        Prop.ForAll(Generators.Everything(LimiterKind.Bucket, perCore: true), ScenarioRunner.NeverExceedsGuarantee);

    [Property(MaxTest = Cases)]
    public Property PerCoreTokenBucket_BlocksTakenALeadAhead_NeverExceedsBurstPlusRate() =>
        Prop.ForAll(Generators.BucketLeads(), ScenarioRunner.NeverExceedsGuarantee);
}

/// <summary>
/// Per-core blocks against the reference model: a limiter with blocks never admits where the model refuses, and refuses
/// only within the documented slack (a request no single block could serve; a counter's leftovers held to the window's
/// end). With blocks of one permit (none) it decides exactly like the model.
/// </summary>
public class PerCoreReferenceModelPropertyTests
{
    private const int Cases = 1000;

    [Property(MaxTest = Cases)]
    public Property PerCoreSlidingWindowLog_RandomOperations_NeverAdmitsWhereTheModelRefuses() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Log, perCore: true), ScenarioRunner.DecidesWithinPerCoreSlack);

    [Property(MaxTest = Cases)]
    public Property PerCoreFixedWindow_RandomOperations_DecidesWithinTheBlocksSlack() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Fixed, perCore: true), ScenarioRunner.DecidesWithinPerCoreSlack);

    [Property(MaxTest = Cases)]
    public Property PerCoreTokenBucket_RandomOperations_NeverAdmitsWhereTheModelRefuses() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Bucket, perCore: true), ScenarioRunner.DecidesWithinPerCoreSlack);

    [Property(MaxTest = Cases)]
    public Property PerCoreSlidingWindowCounter_RandomOperations_DecidesWithinTheBlocksSlack() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Counter, perCore: true), ScenarioRunner.DecidesWithinPerCoreSlack);
}

/// <summary>
/// Liveness and exactness: with nothing queued and time moving forward, each limiter admits exactly when its reference
/// model has room, reports the model's available permits, and its RETRY_AFTER is the model's exact wait.
/// </summary>
public class ReferenceModelPropertyTests
{
    private const int Cases = 1000;

    [Property(MaxTest = Cases)]
    public Property SlidingWindowLog_RandomOperations_AdmitsExactlyWhenWindowHasRoom() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Log), ScenarioRunner.DecidesLikeReferenceModel);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounter_RandomOperations_DecidesLikeSegmentModel() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Counter), ScenarioRunner.DecidesLikeReferenceModel);

    [Property(MaxTest = Cases)]
    public Property FixedWindow_RandomOperations_DecidesLikeWindowModel() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Fixed), ScenarioRunner.DecidesLikeReferenceModel);

    [Property(MaxTest = Cases)]
    public Property TokenBucket_RandomOperations_DecidesLikeRationalBucket() =>
        Prop.ForAll(Generators.Decisions(LimiterKind.Bucket), ScenarioRunner.DecidesLikeReferenceModel);
}

/// <summary>Refunds: an acquire undone at once leaves no trace that any observer could see.</summary>
public class RefundPropertyTests
{
    private const int Cases = 1000;

    [Property(MaxTest = Cases)]
    public Property SlidingWindowLog_AcquireThenRefund_IsIndistinguishable() =>
        Prop.ForAll(Generators.Refunds(LimiterKind.Log), ScenarioRunner.RefundIsIndistinguishable);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounter_AcquireThenRefund_IsIndistinguishable() =>
        Prop.ForAll(Generators.Refunds(LimiterKind.Counter), ScenarioRunner.RefundIsIndistinguishable);

    [Property(MaxTest = Cases)]
    public Property FixedWindow_AcquireThenRefund_IsIndistinguishable() =>
        Prop.ForAll(Generators.Refunds(LimiterKind.Fixed), ScenarioRunner.RefundIsIndistinguishable);

    [Property(MaxTest = Cases)]
    public Property TokenBucket_AcquireThenRefund_IsIndistinguishable() =>
        Prop.ForAll(Generators.Refunds(LimiterKind.Bucket), ScenarioRunner.RefundIsIndistinguishable);
}
