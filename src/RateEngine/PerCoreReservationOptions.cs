namespace RateEngine;

/// <summary>
/// Opt-in per-core reservations for one limiter that many threads share (a global cap, a per-tool limit): each core
/// takes permits from its own block of reserved permits, so admissions stop fighting over one cache line. Pass it to
/// the constructor of <see cref="LockFreeFixedWindowRateLimiter"/> or <see cref="SlidingWindowCounterRateLimiter"/>.
/// </summary>
/// <remarks>
/// <para><b>The guarantee is unchanged</b>: a block's permits were counted in the shared state in one period (a fixed
/// window, or a counter's segment), and they are only ever used in that period; a block left over when its period ends is
/// dropped. So the limit holds for the times permits are actually used, across all cores together.</para>
/// <para><b>What it costs</b>: a request refused by the shared state takes its permits from any other core's block that
/// holds them, so a cap is refused only when no single block can serve the request. What can be lost is bounded: with a
/// fixed window, permits left in blocks when the window ends (it is over, so they were never going to be used); with the
/// counter, permits left in blocks when a segment ends stay counted for the rest of that window, about
/// <c>cores * MaxBlockSize</c> a segment (a block can hold more for a moment when a refund or two refills on one core land
/// together). Near the cap a block takes at most <c>1 / (2 * cores)</c> of what is left, so
/// what blocks hold back shrinks toward the requests themselves. A weighted request larger than any block's leftover is
/// refused while the shared state is out, even if several blocks together hold enough.</para>
/// <para>Pick it for a limiter hit by several threads at once at a high rate, with a limit of thousands or more per
/// window; a limiter with a small limit, or one thread, gains nothing from it.</para>
/// </remarks>
public sealed class PerCoreReservationOptions
{
    /// <summary>The largest block a core may take: 1,048,576.</summary>
    public const int MaxBlockSizeLimit = 1 << 20;

    /// <summary>
    /// The size of the largest block a core takes from the shared state: the request that takes it, plus at most
    /// <c>MaxBlockSize - 1</c> permits kept for the core's next requests. A core's first block keeps one permit, and each
    /// next block twice what the last one kept while the core used every block within its period (half as many, at least
    /// one, when a period ended with permits left). Must be between 1 (no blocks: every request goes to the shared state,
    /// and the limiter decides exactly as without this option) and <see cref="MaxBlockSizeLimit"/>. Default 64.
    /// </summary>
    public int MaxBlockSize { get; set; } = 64;
}
