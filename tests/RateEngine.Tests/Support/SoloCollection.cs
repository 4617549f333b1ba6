namespace RateEngine.Tests.Support;

/// <summary>Tests that must not share the process with others running at the same time (heap measurements).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SoloCollection
{
    public const string Name = "Solo";
}
