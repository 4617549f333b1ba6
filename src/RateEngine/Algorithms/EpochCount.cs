namespace RateEngine.Algorithms;

/// <summary>
/// Packs a window or segment epoch and a permit count into one 64-bit word, so that one CAS both checks that
/// the epoch is still current and updates its count (src/DESIGN.md: "one word decides").
/// </summary>
/// <remarks>
/// The count takes 31 bits: an admission never takes it past a permit limit (itself at most <see cref="int.MaxValue"/>),
/// and an overrun charge saturates at <see cref="MaxCount"/> (<see cref="AddSaturating"/>). The epoch
/// keeps its low 33 bits, and epochs are compared modulo 2^33. The comparison is lopsided: a word may be read as ahead
/// of now by at most <see cref="MaxLag"/> epochs (a slow thread, or a clock that stepped back), and anything further is
/// read as behind. So a key idle for up to 2^33 - 2^20 epochs (99 days of 1 ms windows) is seen as idle, not as
/// "in the future" with its old count; and a clock must not step back by more than 2^20 windows (17 minutes of 1 ms
/// windows) for a backwards step to be exact.
/// </remarks>
internal static class EpochCount
{
    private const int CountBits = 31;
    private const long CountMask = (1L << CountBits) - 1;
    private const long EpochMask = (1L << (64 - CountBits)) - 1;

    /// <summary>The largest count a word holds: 2^31 - 1, which is also <see cref="int.MaxValue"/>, the largest permit limit.</summary>
    public const long MaxCount = CountMask;

    /// <summary>How far (in epochs) a word may be ahead of now and still be read as ahead.</summary>
    public const long MaxLag = 1L << 20;

    public static long Pack(long epoch, long count) => (epoch << CountBits) | count;

    public static long Count(long word) => word & CountMask;

    /// <summary><paramref name="count"/> + <paramref name="amount"/> (both non-negative), saturated at <see cref="MaxCount"/>.</summary>
    public static long AddSaturating(long count, long amount) => amount >= MaxCount - count ? MaxCount : count + amount;

    /// <summary>The low 33 bits of the epoch stored in <paramref name="word"/>.</summary>
    public static long StoredEpoch(long word) => (long)((ulong)word >> CountBits);

    /// <summary>True when <paramref name="word"/> holds <paramref name="epoch"/>.</summary>
    public static bool Holds(long word, long epoch) => StoredEpoch(word) == (epoch & EpochMask);

    /// <summary>
    /// <c>now / period</c>, without the 64-bit division while <paramref name="now"/> lies in the period
    /// <paramref name="word"/> holds (almost every decision: the division alone is a third of an admission on a cheap
    /// clock). <paramref name="maxFastEpoch"/> is <c>long.MaxValue / period - 1</c>, so the product cannot overflow.
    /// </summary>
    public static long PeriodOf(long now, long word, long period, long maxFastEpoch)
    {
        long stored = StoredEpoch(word);
        return stored <= maxFastEpoch && (ulong)(now - (stored * period)) < (ulong)period ? stored : now / period;
    }

    /// <summary>
    /// How many epochs <paramref name="epoch"/> is ahead of the epoch stored in <paramref name="word"/>:
    /// positive when <paramref name="epoch"/> is newer, zero when equal, negative when older.
    /// </summary>
    public static long Distance(long epoch, long word)
    {
        long distance = ((epoch - StoredEpoch(word)) << CountBits) >> CountBits;
        return distance < -MaxLag ? distance + (1L << (64 - CountBits)) : distance;
    }
}
