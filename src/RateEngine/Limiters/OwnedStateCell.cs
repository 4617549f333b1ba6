using System.Runtime.InteropServices;

namespace RateEngine.Limiters;

/// <summary>
/// A limiter's own state (not a partition key's), kept off the cache lines of the objects around it, with the count of
/// successful leases a single limiter's admit path made right beside it (statistics only: decisions never read it).
/// </summary>
/// <remarks>
/// <para><b>Padding.</b> Every admission (or, with per-core blocks, every core's refill) CASes the state, while every
/// admission reads the host's fields and, with blocks, the stripes' array length. Objects allocated one after the other
/// usually sit side by side, and CoreCLR's compaction currently keeps their order, so without padding one core's CAS
/// evicted the line the other core's next admission read. The state is the base class's first field, so the padding
/// before it is an array allocated just before the cell and kept alive by it (adjacent when both come from one
/// allocation context, the common case, not a guarantee); after it, CoreCLR places the 64-byte struct field last.
/// 64 bytes, not the stripes' 128 (<see cref="BlockStripe"/>): what was measured is the line itself, and a state's
/// neighbours are read, not written, on every admission. Only a state held inline (a window's word, the counter's)
/// is padded: the log's state is an object of its own (<c>LogState</c>), which padding the cell does not reach, and a
/// trial that padded that object measured nothing. Measured on the 2-core VM (fixed window, per-core blocks, coarse
/// clock, 2 threads, 1.5 s runs, padded and unpadded alternating): the padded cell ahead in 11 of 14 pairs, median 116
/// against 110 M admissions/s; in the per-core mode's run, 115 against 76-80. A single limiter costs about 160 bytes
/// more; partition keys (their entries) are not padded.</para>
/// <para><b>The success count</b> is taken by an atomic increment just after the admission's CAS, usually on the cache
/// line that CAS has just taken (for the log, the cell's own line): 0.5-1 ns on the benchmark VM, where a per-thread
/// cell of <see cref="StripedCounter"/> costs 2-3 ns (a thread-static lookup, 1.4 ns, and two dependent loads), a third
/// of an admit on the coarse clock. Per-core blocks count on their stripes instead, and partition keys keep the striped
/// count.</para>
/// </remarks>
internal sealed class OwnedStateCell<TState> : StateCell<TState>, ISuccessCount
{
    public long Successes;

    // Never read: each is kept only for its place in memory. (A generic class cannot take an explicit layout.)
#pragma warning disable IDE0052, CS0169, IDE0051
    private readonly long[]? _before;
    private readonly CacheLinePadding _after;
#pragma warning restore IDE0052, CS0169, IDE0051

    private OwnedStateCell(long[]? before, TState state)
    {
        _before = before;
        State = state;
    }

    /// <summary>A cell holding <paramref name="state"/>, padded by a line on either side when the state is held inline.</summary>
    public static OwnedStateCell<TState> Create(TState state) =>
        new(typeof(TState).IsValueType ? new long[CacheLinePadding.Bytes / sizeof(long)] : null, state);

    public long Read() => Volatile.Read(ref Successes);
}

/// <summary>64 bytes that hold nothing: room between a written field and the fields read beside it.</summary>
[StructLayout(LayoutKind.Explicit, Size = Bytes)]
internal struct CacheLinePadding
{
    public const int Bytes = 64;
}
