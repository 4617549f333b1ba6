namespace RateEngine;

/// <summary>
/// Opt-in per-core reservations for one limiter that many threads share (a global cap, a per-tool limit): each core
/// takes permits from its own block of reserved permits, so admissions stop fighting over one cache line. Pass it to
/// the constructor of <see cref="LockFreeFixedWindowRateLimiter"/>, <see cref="SlidingWindowCounterRateLimiter"/>,
/// <see cref="SlidingWindowLogRateLimiter"/> or <see cref="LockFreeTokenBucketRateLimiter"/>; or, for the hot keys of a
/// partitioned limiter, set it as <see cref="PartitionedLimiterOptions.PerCoreReservation"/>.
/// </summary>
/// <remarks>
/// <para><b>The guarantee is unchanged</b>, for the times permits are actually used, across all cores together. A
/// window's block holds permits the shared state counted in one period (a fixed window, or a counter's segment), used only
/// in that period and dropped when it ends. The log's block holds permits the log admitted in one block period of 1/256
/// of its window, used only in that period; the log counts every permit for <c>W + W/128</c> instead of W, which keeps
/// the uses of any two permits that share a slot of its ring at least W apart. A bucket's block holds tokens the shared bucket admitted in one step, each
/// used only by the time the bucket would still have admitted it then (its slot in the bucket's schedule): a token used
/// later than that is never used.</para>
/// <para><b>What it costs</b>: a request refused by the shared state takes its permits from any other core's block that
/// holds them, so a single permit is refused only when every block and the shared state are empty; a weighted request
/// larger than any one block is refused while the shared state is out. Permits that can be lost: with a fixed window,
/// those left in blocks when the window ends (it is over, so they were never going to be used); with the counter, those
/// left in blocks when a segment ends stay counted for the rest of that window, about <c>cores * MaxBlockSize</c> a
/// segment (a block can hold more for a moment when a refund or two refills on one core land together); with the log,
/// those left in blocks when a block period ends stay counted for the window, and every permit counts W/128 longer, so
/// its steady rate is about 0.8 % below the limit; with the bucket, a block taken from a nearly full bucket has its slots
/// start a little ahead (twice the core's recent pace over the block's extra tokens, at most 1/64 of the burst) so that a
/// core slower than the refill can still use every token by its slot, and the bucket then reads up to about
/// <c>TokenLimit / 64</c> tokens emptier than without blocks until it is next full; tokens a core does not use by their
/// slot are lost (a core much slower than its own recent pace: its blocks then halve, down to none, and it takes from the
/// shared bucket alone and tries a block every 64th time). Near the cap a block takes at most <c>1 / (2 * cores)</c> of what is left,
/// so what blocks hold back shrinks toward the requests themselves. With blocks (<see cref="MaxBlockSize"/> above 1), a per-core bucket's leases cannot give tokens back
/// (<c>Refund</c> frees nothing).</para>
/// <para>Pick it for a limiter hit by several threads at once at a high rate, with a limit of thousands or more per
/// window; a limiter with a small limit, or one thread, gains nothing from it.</para>
/// </remarks>
public sealed class PerCoreReservationOptions
{
    /// <summary>The largest block a core may take: 1,048,576.</summary>
    public const int MaxBlockSizeLimit = 1 << 20;

    /// <summary>
    /// The size of the largest block a core takes from the shared state: the request that takes it, plus at most
    /// <c>MaxBlockSize - 1</c> permits kept for the core's next requests. A window's (or the log's) core keeps none at
    /// first; once it runs out within a period, each next block keeps twice what the last one kept (at least one), and half
    /// as many after a period that ended with permits left (unless the core ran out in that period too: a busy core's last
    /// block of a period is rarely used up), so a core that sends one request a period never holds permits back. Must be between 1 and <see cref="MaxBlockSizeLimit"/>: with 1 there are no blocks, and the limiter is the one
    /// without this option, refunds included. Default 64.
    /// </summary>
    public int MaxBlockSize { get; set; } = 64;

    /// <summary>Throws unless <see cref="MaxBlockSize"/> is in range; <paramref name="name"/> says where the options were passed.</summary>
    internal void ThrowIfInvalid(string paramName, string name)
    {
        if (MaxBlockSize is < 1 or > MaxBlockSizeLimit)
        {
            throw new ArgumentOutOfRangeException(paramName, MaxBlockSize, $"{name} must be between 1 and {MaxBlockSizeLimit}.");
        }
    }

    /// <summary>For tests: the number of blocks, instead of one per processor (rounded up to a power of two, at most 64).</summary>
    internal int? Stripes { get; set; }

    /// <summary>For tests: a partitioned key's smallest limit that is promoted to blocks (see <see cref="PartitionedLimiterOptions.MinHotKeyLimit"/>).</summary>
    internal long HotKeyLimitFloor { get; set; } = PartitionedLimiterOptions.MinHotKeyLimit;

    /// <summary>For tests: the streak that promotes a partition key (see <see cref="PartitionedLimiterOptions.HotKeyStreak"/>).</summary>
    internal int HotKeyStreak { get; set; } = PartitionedLimiterOptions.HotKeyStreak;

    /// <summary>For tests: the block a hot partition key's request starts from, as <see cref="Limiters.IPerCoreHost.ChooseStripe"/>.</summary>
    internal Func<int>? ChooseStripe { get; set; }

    /// <summary>For tests: one admission in this many may promote its key, a power of two (see <see cref="PartitionedLimiterOptions.HotKeySampling"/>).</summary>
    internal int HotKeySampling { get; set; } = PartitionedLimiterOptions.HotKeySampling;
}
