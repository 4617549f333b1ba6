using RateEngine.Redis.Hybrid;

namespace RateEngine.Redis.Policies;

/// <summary>
/// One request's part on the block-served layers of a hybrid policy, in their order: each layer's key, what the request
/// takes there, and the block it took from (null until taken).
/// </summary>
internal sealed class LocalTakes(LayerKey[] keys, long[] amounts)
{
    public LayerKey[] Keys { get; } = keys;

    public long[] Amounts { get; } = amounts;

    public LocalBlock?[] From { get; } = new LocalBlock?[keys.Length];
}
