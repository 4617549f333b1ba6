namespace RateEngine.Policies;

/// <summary>
/// Each thread's spare hold arrays, so that an admitted request allocates its lease alone. The array is the larger part of
/// what a request would allocate (72 bytes a layer), and a fresh one per request streams new lines through the cache that
/// evict the keys' state: a reused one stays in L1.
/// </summary>
/// <remarks>
/// An array is given back only by its one owner once nothing reads it again: a lease when it has ended (under its lock,
/// after the last refund), or the acquire that refused. A lease that is never ended (reconciled and never disposed, or
/// abandoned) leaves its array to the collector. Arrays are kept by length, a few per thread: a thread that ends leases
/// another thread took leaves no more than that.
/// </remarks>
internal static class LayerHoldPool
{
    /// <summary>Policies with more layers than this allocate their holds each time.</summary>
    private const int MaxLength = 16;

    /// <summary>Spare arrays a thread keeps of each length: enough for a few requests a thread has in flight at once.</summary>
    private const int PerLength = 4;

    [ThreadStatic]
    private static LayerHold[]?[]? t_spare;

    /// <summary>A cleared array of <paramref name="length"/> holds.</summary>
    public static LayerHold[] Rent(int length)
    {
        if (length is > 0 and <= MaxLength && t_spare is { } spare)
        {
            int first = (length - 1) * PerLength;
            for (int i = first; i < first + PerLength; i++)
            {
                if (spare[i] is { } holds)
                {
                    spare[i] = null;
                    return holds;
                }
            }
        }

        return new LayerHold[length];
    }

    /// <summary>Clears <paramref name="holds"/> (no entry or tier stays reachable through it) and keeps it for a later request.</summary>
    public static void Return(LayerHold[] holds)
    {
        int length = holds.Length;
        if (length is 0 or > MaxLength)
        {
            return;
        }

        Array.Clear(holds);
        LayerHold[]?[] spare = t_spare ??= new LayerHold[MaxLength * PerLength][];
        int first = (length - 1) * PerLength;
        for (int i = first; i < first + PerLength; i++)
        {
            if (spare[i] is null)
            {
                spare[i] = holds;
                return;
            }
        }
    }
}
