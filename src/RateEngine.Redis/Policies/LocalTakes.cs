using RateEngine.Redis.Hybrid;

namespace RateEngine.Redis.Policies;

/// <summary>
/// One request's part on the block-served layers of a hybrid policy, in their order: each layer's key, what the request
/// takes there, the cap of the request's tier there, and the block it took from (null until taken).
/// </summary>
internal sealed class LocalTakes(LayerKey[] keys, long[] amounts, long[] limits)
{
    public LayerKey[] Keys { get; } = keys;

    public long[] Amounts { get; } = amounts;

    /// <summary>
    /// The cap each layer decides this request under (its tier's): a key's requests may come in several tiers, and a
    /// block serves a request only if it was granted under a cap no higher than the request's.
    /// </summary>
    public long[] Limits { get; } = limits;

    public LocalBlock?[] From { get; } = new LocalBlock?[keys.Length];
}
