namespace RateEngine.Policies;

/// <summary>A layer's algorithm at one limit: the layer's fixed limit (no name), or one tier's.</summary>
internal sealed class LayerTier<TAlgorithm>(string? name, long limit, TAlgorithm algorithm)
    where TAlgorithm : struct
{
    public readonly string? Name = name;

    public readonly long Limit = limit;

    public readonly TAlgorithm Algorithm = algorithm;
}
