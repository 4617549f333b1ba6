namespace RateEngine.Algorithms;

/// <summary>New arrays that a lock-free reader probes before anything is written to them.</summary>
internal static class FreshArray
{
    /// <summary>
    /// A large array (the GC's large object heap) may sit on pages the GC gave back to the OS and took again: they read as
    /// zero without being written yet. A reader that reads a slot before it writes one makes each such page fault twice,
    /// the second time to copy the shared zero page, which flushes the TLB of every core the process runs on (an interrupt
    /// to each; microseconds in a VM, a quarter of a string key's first touch when measured). Writing every page first
    /// makes that one plain fault per page. A small array needs nothing: generation 0's memory is reused from collection
    /// to collection, so it has nearly always been written already.
    /// </summary>
    /// <param name="array">An array just allocated, that no other thread has seen.</param>
    public static T[] WrittenThrough<T>(T[] array)
    {
        // A new small array is in generation 0 (1 or 2 if collections ran since it was made: then only a clear too many).
        if (GC.GetGeneration(array) == GC.MaxGeneration)
        {
            array.AsSpan().Clear();
        }

        return array;
    }
}
