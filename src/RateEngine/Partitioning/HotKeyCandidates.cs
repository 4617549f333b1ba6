using System.Runtime.CompilerServices;

namespace RateEngine.Partitioning;

/// <summary>
/// Which keys of a partitioned limiter get per-core blocks (<see cref="PartitionedLimiterOptions.PerCoreReservation"/>):
/// a key that two processors admit on, seen by sampled admissions, while fewer than
/// <see cref="PartitionedLimiterOptions.MaxHotKeys"/> are hot.
/// </summary>
/// <remarks>
/// A sampled admission (one in <see cref="PartitionedLimiterOptions.HotKeySampling"/> on each thread) notes its entry and
/// processor in a slot picked by the entry's identity; the next sampled admission on that entry from another processor
/// promotes it. So a key whose requests all run on one core stays cold, whatever its rate, and a key that several cores
/// share is promoted within a few samples (as may a key whose requests run on threads that move between cores). Slots are written without synchronization: a torn or overwritten slot
/// only delays or hastens a promotion, and a promotion is always safe. Its own object, so that its writes (one admission
/// in <see cref="PartitionedLimiterOptions.HotKeySampling"/>) never touch a line the limiter's every admission reads.
/// </remarks>
internal sealed class HotKeyCandidates(int sampling, Func<int>? chooseProcessor)
{
    [ThreadStatic]
    private static int t_admissions;

    private readonly int _sampleMask = sampling - 1;
    private readonly Candidate[] _slots = new Candidate[PartitionedLimiterOptions.MaxHotKeys];
    private int _hot;

    /// <summary>Keys with blocks right now.</summary>
    public int Count => Volatile.Read(ref _hot);

    /// <summary>Whether this admission on this thread is a sampled one.</summary>
    public bool Sampled() => (++t_admissions & _sampleMask) == 0;

    /// <summary>Notes a sampled admission on <paramref name="entry"/>; true when the last one noted for it came from another processor.</summary>
    public bool Contended(object entry)
    {
        int processor = chooseProcessor?.Invoke() ?? Thread.GetCurrentProcessorId();
        ref Candidate slot = ref _slots[RuntimeHelpers.GetHashCode(entry) & (_slots.Length - 1)];
        if (ReferenceEquals(slot.Entry, entry) && slot.Processor != processor)
        {
            slot.Entry = null;
            return true;
        }

        slot.Entry = entry;
        slot.Processor = processor;
        return false;
    }

    /// <summary>Counts one more hot key, unless <see cref="PartitionedLimiterOptions.MaxHotKeys"/> are hot already.</summary>
    public bool TryAdd()
    {
        while (true)
        {
            int hot = Volatile.Read(ref _hot);
            if (hot >= PartitionedLimiterOptions.MaxHotKeys)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _hot, hot + 1, hot) == hot)
            {
                return true;
            }
        }
    }

    /// <summary>One hot key fewer: its promotion lost a race, or it was evicted.</summary>
    public void Remove() => Interlocked.Decrement(ref _hot);

    private struct Candidate
    {
        public object? Entry;
        public int Processor;
    }
}
