namespace RateEngine.Algorithms;

/// <summary>
/// Packs a window or segment epoch and a permit count into one 64-bit word, so that one CAS both checks that
/// the epoch is still current and updates its count (DESIGN.md: "one word decides").
/// </summary>
/// <remarks>
/// The count takes 31 bits (it never exceeds a permit limit, itself at most <see cref="int.MaxValue"/>); the epoch
/// keeps its low 33 bits. Epochs are compared modulo 2^33 with a signed distance, which is exact while two epochs
/// being compared are less than 2^32 epochs apart; with 1 ms segments that is 49 days. A stale word that far behind
/// is read as "ahead of now", which keeps its count: stricter, never more permissive.
/// </remarks>
internal static class EpochCount
{
    private const int CountBits = 31;
    private const long CountMask = (1L << CountBits) - 1;
    private const long EpochMask = (1L << (64 - CountBits)) - 1;

    public static long Pack(long epoch, long count) => (epoch << CountBits) | count;

    public static long Count(long word) => word & CountMask;

    /// <summary>The low 33 bits of the epoch stored in <paramref name="word"/>.</summary>
    public static long StoredEpoch(long word) => (long)((ulong)word >> CountBits);

    /// <summary>True when <paramref name="word"/> holds <paramref name="epoch"/>.</summary>
    public static bool Holds(long word, long epoch) => StoredEpoch(word) == (epoch & EpochMask);

    /// <summary>
    /// How many epochs <paramref name="epoch"/> is ahead of the epoch stored in <paramref name="word"/>:
    /// positive when <paramref name="epoch"/> is newer, zero when equal, negative when older.
    /// </summary>
    public static long Distance(long epoch, long word) => ((epoch - StoredEpoch(word)) << CountBits) >> CountBits;
}
