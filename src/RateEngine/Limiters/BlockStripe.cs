using System.Runtime.InteropServices;

namespace RateEngine.Limiters;

/// <summary>
/// One core's block, alone on its cache lines: the word sits 64 bytes into a 128-byte slot, so no two stripes' words
/// share a line, even with adjacent-line prefetching.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal struct BlockStripe
{
    [FieldOffset(64)]
    public long Word;

    /// <summary>The extra permits the stripe's last block took (only a sizing hint: races on it are harmless).</summary>
    [FieldOffset(72)]
    public long LastExtra;
}
