using System.Runtime.CompilerServices;

namespace RateEngine.Timing;

/// <summary>
/// The one clock of every policy built on a given <see cref="TimeProvider"/>, with the UTC time of its origin: policies
/// that share it read the same time, so <see cref="RatePolicy{TContext}.Combine(RatePolicy{TContext}[])"/> can decide all their layers at one
/// clock read.
/// </summary>
/// <remarks>
/// Sharing changes no decision: windows are aligned to the clock's origin, which is the first policy's build time instead
/// of each policy's own, and calendar periods are anchored to the UTC time read at that origin either way (once per
/// provider for the process: src/DESIGN.md says what a wrong wall clock at that moment does).
/// </remarks>
internal sealed class PolicyClock
{
    private static readonly ConditionalWeakTable<TimeProvider, PolicyClock> Clocks = [];

    private PolicyClock(TimeProvider provider)
    {
        Clock = new LimiterClock(provider);
        OriginUtc = provider.GetUtcNow();
    }

    public LimiterClock Clock { get; }

    /// <summary>The provider's UTC time when <see cref="Clock"/> read zero.</summary>
    public DateTimeOffset OriginUtc { get; }

    public static PolicyClock Of(TimeProvider provider) => Clocks.GetValue(provider, static provider => new PolicyClock(provider));
}
