using System.Runtime.CompilerServices;

namespace RateEngine.Partitioning;

/// <summary>
/// Which keys of a partitioned limiter get per-core blocks (<see cref="PartitionedLimiterOptions.PerCoreReservation"/>):
/// keys that take a large share of the limiter's traffic from several processors at once, while fewer than
/// <see cref="PartitionedLimiterOptions.MaxHotKeys"/> are hot.
/// </summary>
/// <remarks>
/// <para>A sampled admission (one in <see cref="PartitionedLimiterOptions.HotKeySampling"/> on each thread) notes its
/// entry and processor in one of <see cref="Slots"/> slots, picked by the entry's identity. A sample on the slot's entry
/// from another processor than the last extends the entry's streak; a sample on another entry takes the slot over. An
/// entry whose streak reaches <see cref="PartitionedLimiterOptions.HotKeyStreak"/> is promoted. So a key must come back
/// to its slot, from alternating processors, before the samples of the other keys that share the slot displace it:
/// a few keys that every thread hits (a per-tool or per-model key) are promoted within a few dozen samples, while among
/// many keys of even traffic (a thousand users) none is, which matters because blocks cost every admission a few more
/// cache lines and pay only where one key's line would otherwise move between cores on most admissions. A key whose
/// requests all run on one core is never promoted.</para>
/// <para>Slots are written without synchronization: a torn or overwritten slot only delays or hastens a promotion, and a
/// promotion is always safe. Its own object, so that its writes (one admission in
/// <see cref="PartitionedLimiterOptions.HotKeySampling"/>) never touch a line the limiter's every admission reads.</para>
/// </remarks>
internal sealed class HotKeyCandidates(int sampling, int streak, Func<int>? chooseProcessor)
{
    /// <summary>The candidate slots: a key needs about this large a share of the sampled traffic to hold its slot.</summary>
    public const int Slots = 64;

    [ThreadStatic]
    private static int t_admissions;

    private readonly int _sampleMask = sampling - 1;
    private readonly Candidate[] _slots = new Candidate[Slots];
    private int _hot;

    /// <summary>Keys with blocks right now.</summary>
    public int Count => Volatile.Read(ref _hot);

    /// <summary>Whether this admission on this thread is a sampled one.</summary>
    public bool Sampled() => (++t_admissions & _sampleMask) == 0;

    /// <summary>Notes a sampled admission on <paramref name="entry"/>; true when its streak of samples from alternating processors is long enough.</summary>
    public bool Contended(object entry)
    {
        int processor = chooseProcessor?.Invoke() ?? Thread.GetCurrentProcessorId();
        ref Candidate slot = ref _slots[RuntimeHelpers.GetHashCode(entry) & (Slots - 1)];
        if (!ReferenceEquals(slot.Entry, entry))
        {
            slot.Entry = entry;
            slot.Processor = processor;
            slot.Streak = 0;
            return false;
        }

        if (slot.Processor == processor)
        {
            return false;
        }

        slot.Processor = processor;
        if (++slot.Streak < streak)
        {
            return false;
        }

        slot.Entry = null;
        return true;
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
        public int Streak;
    }
}
