using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace RateEngine.Limiters;

/// <summary>Starts a cache line on its way ahead of a precise clock read, which would otherwise wait for it.</summary>
internal static class CacheLine
{
    /// <summary>
    /// Asks for the line that holds <paramref name="location"/> without waiting for it. The precise clock's read is ordered
    /// after every earlier load (the vDSO's <c>lfence; rdtsc</c> or <c>rdtscp</c>), so a load that misses, such as a hot
    /// key's state that the other core wrote last, is paid in full before the clock is read; a prefetch is not waited
    /// for, so the line travels while the clock is read. The address may be stale when the prefetch runs (the GC may have
    /// moved the object): a prefetch never faults, it only fetches a line that nobody then uses.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Prefetch<T>(ref T location)
    {
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(Unsafe.AsPointer(ref location));
        }
    }
}
