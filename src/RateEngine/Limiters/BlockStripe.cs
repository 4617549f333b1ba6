using System.Numerics;
using System.Runtime.InteropServices;

namespace RateEngine.Limiters;

/// <summary>
/// One core's block, alone on its cache lines: the word sits 64 bytes into a 128-byte slot, so no two stripes' words
/// share a line, even with adjacent-line prefetching. A window's block is the word alone (<see cref="StripedHost{TAlgorithm, TState}"/>);
/// a bucket's also has the fields after it (<see cref="PerCoreBucketHost"/>).
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal struct BlockStripe
{
    /// <summary>One block per processor (or the count a test set), rounded up to a power of two and at most 64.</summary>
    public static BlockStripe[] Allocate(PerCoreReservationOptions options) =>
        new BlockStripe[(int)BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(options.Stripes ?? Environment.ProcessorCount, 1, 64))];

    [FieldOffset(64)]
    public long Word;

    /// <summary>The extra permits the stripe's last block took (only a sizing hint: races on it are harmless).</summary>
    [FieldOffset(72)]
    public long LastExtra;

    /// <summary>A token bucket's block: the decision stamp of the admission that took it (ticks).</summary>
    [FieldOffset(80)]
    public long Stamp;

    /// <summary>A token bucket's block: <c>TokenBucket.FirstSlotAfterStamp</c> of the admission that took it (units).</summary>
    [FieldOffset(88)]
    public long FirstSlot;

    /// <summary>A token bucket's block: the tokens the admission that took it took, its request's included.</summary>
    [FieldOffset(96)]
    public long Size;

    /// <summary>A token bucket's stripe: refills without a block since the last try (only a pacing hint: races are harmless).</summary>
    [FieldOffset(104)]
    public long Skips;

    /// <summary>
    /// A token bucket's stripe: <see cref="Skips"/> when its last block was taken, so the core's pace since then counts the
    /// requests it took without a block (only a pacing hint). Before the word, like <see cref="RanOutIn"/>.
    /// </summary>
    [FieldOffset(48)]
    public long SkipsAtBlock;

    /// <summary>A window's stripe: one more than the period of its last refill, 0 before the first (only a sizing hint).</summary>
    [FieldOffset(112)]
    public long RefilledIn;

    /// <summary>A window's stripe: set when another core's sweep emptied this block with permits left (only a sizing hint).</summary>
    [FieldOffset(120)]
    public long SweptLeftover;

    /// <summary>
    /// A window's stripe: one more than the last period in which the core ran out and refilled again (only a sizing hint).
    /// It sits before the word, where the slot has room; arrays are not line-aligned, so it may share the word's line or
    /// the line of the stripe before's last fields, which is harmless: only refills write either.
    /// </summary>
    [FieldOffset(40)]
    public long RanOutIn;

    /// <summary>
    /// Successful leases of the limiter this stripe served (statistics only), counted with an atomic increment right after
    /// the take's CAS on the word: next to it, so usually on the line that CAS has just taken, which is this core's (in one
    /// placement of the array in eight it is on the line before, written by this core alone all the same).
    /// </summary>
    [FieldOffset(56)]
    public long Successes;
}
