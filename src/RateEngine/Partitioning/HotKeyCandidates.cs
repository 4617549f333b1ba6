using System.Runtime.CompilerServices;

namespace RateEngine.Partitioning;

/// <summary>
/// Which keys of a partitioned limiter get per-core blocks (<see cref="PartitionedLimiterOptions.PerCoreReservation"/>):
/// keys that take a large share of the limiter's traffic from several processors, while fewer than
/// <see cref="PartitionedLimiterOptions.MaxHotKeys"/> are hot.
/// </summary>
/// <remarks>
/// <para>Sampled admissions (one in <see cref="PartitionedLimiterOptions.HotKeySampling"/> on each thread, at random, so
/// that a thread's fixed pattern of limiters and keys cannot hide one) vote in one of <see cref="Slots"/> slots, picked by
/// the entry's identity: a sample of the slot's entry adds one, a sample of another entry takes one away, and at zero the
/// other entry takes the slot. An entry whose count reaches <see cref="PartitionedLimiterOptions.HotKeyStreak"/>, having
/// been sampled on at least two processors, is promoted. So a key needs the majority of its slot's samples: a few keys
/// that every thread hits (a per-tool or per-model key) are promoted within a few dozen of their samples, while among many
/// keys of even traffic (a thousand users, about sixteen to a slot) a count of 16 is a random walk's excursion against
/// its drift that practically never happens. That matters because blocks cost every admission a few more cache lines
/// and pay only where one key's line would otherwise move between cores on most admissions, and a hot key stays hot
/// until it is evicted. A key whose requests all run on one core is never promoted.</para>
/// <para>Slots are written without synchronization: a torn or overwritten slot only delays or hastens a promotion, and a
/// promotion is always safe. Its own object, so that its writes (one admission in
/// <see cref="PartitionedLimiterOptions.HotKeySampling"/>) never touch a line the limiter's every admission reads.</para>
/// </remarks>
internal sealed class HotKeyCandidates(int sampling, int streak, Func<int>? chooseProcessor)
{
    /// <summary>The candidate slots: a key needs the majority of its slot's sampled traffic to be promoted.</summary>
    public const int Slots = 64;

    /// <summary>This thread's sampling state (xorshift32; 0 until its first admission seeds it).</summary>
    [ThreadStatic]
    private static uint t_random;

    private readonly uint _sampleMask = (uint)sampling - 1;
    private readonly Candidate[] _slots = new Candidate[Slots];
    private int _hot;

    /// <summary>Keys with blocks right now.</summary>
    public int Count => Volatile.Read(ref _hot);

    /// <summary>Whether this admission on this thread is a sampled one (one in the sampling rate, at random).</summary>
    public bool Sampled()
    {
        uint x = t_random;
        if (x == 0)
        {
            x = (uint)Environment.CurrentManagedThreadId * 0x9E3779B9u | 1;
        }

        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        t_random = x;
        return (x & _sampleMask) == 0;
    }

    /// <summary>Votes for <paramref name="entry"/> in its slot; true when it has won enough of the slot's samples, on two processors or more.</summary>
    public bool Contended(object entry)
    {
        int processor = chooseProcessor?.Invoke() ?? Thread.GetCurrentProcessorId();
        ref Candidate slot = ref _slots[RuntimeHelpers.GetHashCode(entry) & (Slots - 1)];
        if (!ReferenceEquals(slot.Entry, entry))
        {
            if (--slot.Votes <= 0)
            {
                slot.Entry = entry;
                slot.Processor = processor;
                slot.Votes = 1;
                slot.OnSeveralProcessors = false;
            }

            return false;
        }

        slot.OnSeveralProcessors |= slot.Processor != processor;
        slot.Processor = processor;
        if (++slot.Votes < streak || !slot.OnSeveralProcessors)
        {
            return false;
        }

        slot.Entry = null;
        slot.Votes = 0;
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
        public int Votes;
        public bool OnSeveralProcessors;
    }
}
