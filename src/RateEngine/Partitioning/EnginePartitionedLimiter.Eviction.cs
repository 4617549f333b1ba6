namespace RateEngine.Partitioning;

/// <content>
/// Idle eviction: the sweep timer visits one shard per tick and removes keys whose state is indistinguishable from a
/// fresh one; a full shard sweeps itself before it refuses a new key; an admission that lands on an entry being evicted
/// is found out and decided again on the key's live entry (see the remarks on the class).
/// </content>
internal sealed partial class EnginePartitionedLimiter<TResource, TKey, TAlgorithm, TState>
{
    public void SweepAllShards()
    {
        for (int i = 0; i < _table.ShardCount; i++)
        {
            SweepNextShard();
        }
    }

    /// <summary>
    /// One shard's share of <paramref name="interval"/>, in whole milliseconds as timers count them: at least 1 ms (so a
    /// full pass takes at least 64 ms) and at most the timer's limit of about 49.7 days.
    /// </summary>
    private static TimeSpan SweepPeriod(TimeSpan interval, int shards)
    {
        const long MaxTimerMilliseconds = 0xFFFFFFFE;
        long milliseconds = interval.Ticks / shards / TimeSpan.TicksPerMillisecond;
        return TimeSpan.FromMilliseconds(Math.Clamp(milliseconds, 1, MaxTimerMilliseconds));
    }

    /// <summary>Sweeps one shard; called by the sweep timer (and by tests, through the fake clock).</summary>
    internal void SweepNextShard()
    {
        if (_disposed)
        {
            return;
        }

        Interlocked.Increment(ref _sweepTicks);

        int shard = (int)((uint)Interlocked.Increment(ref _nextShard) % (uint)_table.ShardCount);
        try
        {
            _table.Sweep(shard, _evictIfIdle);
        }
#pragma warning disable CA1031 // a timer's thread: an exception would end the process
        catch (Exception)
#pragma warning restore CA1031
        {
            // A sweep that threw (a TimeProvider that throws) leaves its shard to the next round; no entry was left marked.
        }
    }

    /// <summary>
    /// A full shard sweeps itself for idle keys before refusing a new one, at most once per tick of the sweep timer:
    /// under a flood of new keys against a table full of active ones, refusing stays cheap. Runs under the shard's lock.
    /// </summary>
    private void MakeRoom(int shard)
    {
        if (!RoomSweepDue(shard))
        {
            return;
        }

        // Stored plus one, so that a never-swept shard (0) is always due.
        Volatile.Write(ref _roomSweptAt[shard], Volatile.Read(ref _sweepTicks) + 1);
        _table.SweepHeld(shard, _evictIfIdle);
    }

    private bool RoomSweepDue(int shard) => Volatile.Read(ref _roomSweptAt[shard]) != Volatile.Read(ref _sweepTicks) + 1;

    public Action? BeforeEvictionMark { get; set; }

    /// <summary>Under the shard's lock: evicts the entry if it is indistinguishable from a fresh one.</summary>
    private bool EvictIfIdle(TKey key, PartitionEntry<TState> entry)
    {
        object link = Volatile.Read(ref entry.Link);
        var keyLimiter = link as PartitionKeyLimiter;
        var hot = (keyLimiter?.Tier ?? link) as PartitionHotKey;
        if ((hot?.Tier ?? keyLimiter?.Tier ?? link) is not PartitionTier<TAlgorithm, TState> tier)
        {
            // Only an eviction's mark: one left in the table (none should be) finishes its eviction, so that the key's
            // requests, which look it up again while they see the mark, find a new entry.
            return ReferenceEquals(link, PartitionEntry<TState>.Evicted);
        }

        long now = _clock.Now();
        if (tier.Algorithm.GetFullSince(ref entry.State, now) is null)
        {
            return false;
        }

        if (keyLimiter is not null && !keyLimiter.TryRetire())
        {
            return false; // waiters: not idle
        }

        BeforeEvictionMark?.Invoke();

        // Mark, then re-check: pairs with the admitting thread's CAS-then-read (see remarks). The re-check reads the clock
        // again, after the mark: an admission that stands read its clock before the mark, so its window is never ahead of
        // that reading. At the first check's reading, a sweep stalled (or a clock stepped forward) 2^20 windows read a busy
        // window word as one far behind, so as idle, and evicted it. A clock that throws must not leave the key marked:
        // every request on it would look it up again for ever.
        bool evicted = false;
        try
        {
            evicted = Interlocked.CompareExchange(ref entry.Link, PartitionEntry<TState>.Evicted, link) == link
                && tier.Algorithm.GetFullSince(ref entry.State, _clock.Now()) is not null;
        }
        finally
        {
            if (!evicted)
            {
                Interlocked.CompareExchange(ref entry.Link, link, PartitionEntry<TState>.Evicted);
                keyLimiter?.Unretire();
            }
        }

        if (!evicted)
        {
            return false;
        }

        if (hot is not null)
        {
            _hotKeys!.Remove(); // its blocks' periods are over (the state is fresh): nothing in them is usable
        }

        // Retired with an empty queue: a racing AcquireAsync gets Retired and looks again, a racing AttemptAcquire is
        // discarded by AdmissionLost. Not disposed, so that neither throws ObjectDisposedException on a live limiter; only
        // its wake-up timer goes (a provider may hold timers until they are disposed). The eviction stands whatever the
        // provider's timer does on its dispose: thrown from here, it would leave the slot marked and not removed, and every
        // request for the key would spin on the mark until the shard's next sweep.
        try
        {
            keyLimiter?.Evicted();
        }
#pragma warning disable CA1031 // the timer is the provider's: its failure to let go must not undo a finished eviction
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        return true;
    }

    /// <summary>
    /// After an admission on <paramref name="entry"/>: true when an eviction removed the entry, so the admission counts
    /// for nothing and must be decided again on the key's live entry. If an eviction is in progress its verdict is awaited
    /// (the evictor holds the shard lock for a few instructions): an eviction it undoes leaves the admission standing.
    /// </summary>
    private bool AdmissionLost(TKey key, PartitionEntry<TState> entry)
    {
        SpinWait spin = default;
        while (ReferenceEquals(Volatile.Read(ref entry.Link), PartitionEntry<TState>.Evicted))
        {
            if (!ReferenceEquals(_table.Find(key), entry))
            {
                return true;
            }

            spin.SpinOnce();
        }

        return false;
    }
}
