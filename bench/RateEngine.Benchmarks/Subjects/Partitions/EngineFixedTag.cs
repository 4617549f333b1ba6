using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>The tag of RateEngine's <c>PartitionedLimiter.CreateFixedWindow</c> (see <see cref="IPartitionTag"/>).</summary>
internal readonly struct EngineFixedTag : IPartitionTag
{
    public static PartitionSide Side => PartitionSide.Engine;

    public static PartitionFamily Family => PartitionFamily.FixedWindow;

    public static string Name => "PartitionedLimiter.CreateFixedWindow";

    public static PartitionedRateLimiter<TKey> Create<TKey>(bool held)
        where TKey : notnull => held
        ? PartitionedLimiter.CreateFixedWindow<TKey, TKey>(static key => key, static _ => PartitionSetup.HeldFixed, PartitionSetup.EngineOptions())
        : PartitionedLimiter.CreateFixedWindow<TKey, TKey>(static key => key, static _ => PartitionSetup.HotFixed, PartitionSetup.EngineOptions());
}
