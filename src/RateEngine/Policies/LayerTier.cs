namespace RateEngine.Policies;

/// <summary>A layer's algorithm at one limit: the layer's fixed limit, or one tier's.</summary>
internal sealed class LayerTier<TAlgorithm>(long limit, TAlgorithm algorithm)
    where TAlgorithm : struct
{
    public readonly long Limit = limit;

    public readonly TAlgorithm Algorithm = algorithm;
}
