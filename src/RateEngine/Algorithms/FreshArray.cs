namespace RateEngine.Algorithms;

/// <summary>New arrays that a lock-free reader probes before anything is written to them.</summary>
internal static class FreshArray
{
    /// <summary>
    /// A large array (the GC's large object heap) may sit on pages the GC gave back to the OS and took again: they read as
    /// zero without being written yet. A reader that reads a slot before it writes one makes each such page fault twice,
    /// the second time to copy the shared zero page, which flushes the TLB of every core the process runs on (an interrupt
    /// to each; microseconds in a VM, a quarter of a string key's first touch when measured). Writing every page first
    /// makes that one plain fault per page. A small array's memory was zeroed by the allocator, so it needs nothing.
    /// </summary>
    /// <param name="array">An array just allocated, that no other thread has seen.</param>
    public static T[] WrittenThrough<T>(T[] array)
    {
        if (GC.GetGeneration(array) == GC.MaxGeneration) // just allocated, so only a large object is not in generation 0
        {
            array.AsSpan().Clear();
        }

        return array;
    }
}
