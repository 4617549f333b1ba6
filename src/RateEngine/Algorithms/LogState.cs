namespace RateEngine.Algorithms;

/// <summary>Per-limiter (or per-key) state of <see cref="SlidingWindowLog"/>: the ring and its tail.</summary>
internal sealed class LogState
{
    /// <summary>Sign bit: locked by a refund; then a 19-bit refund generation; then the next ticket (44 bits).</summary>
    public long Tail;

    public readonly LogSlot[] Slots;

    public LogState(int limit, long modulus)
    {
        // Slot i starts as if ticket i - L (modulo M) had been published with a stamp that is always expired.
        Slots = new LogSlot[limit];
        for (int i = 0; i < Slots.Length; i++)
        {
            Slots[i] = new LogSlot { Sequence = modulus - limit + i, Stamp = SlidingWindowLog.NeverStamp, Previous = SlidingWindowLog.NeverStamp };
        }
    }
}
