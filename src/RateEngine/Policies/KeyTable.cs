using RateEngine.Partitioning;
using RateEngine.Timing;

namespace RateEngine.Policies;

/// <summary>
/// The keys of every layer built with one key selector (a user's request rate, token budget and daily cents): one lookup
/// per request finds one entry that holds each member layer's cell, and idle eviction removes a key only when every
/// member's cell is idle. A layer with a key selector of its own has a table of its own.
/// </summary>
/// <remarks>
/// <para><b>Eviction</b> is the partitioned limiter's: a sweep marks an idle entry evicted (CAS on its link) and re-checks
/// that every cell is still idle; a layer that admits on a cell re-reads the link after its CAS. At least one sees the
/// other, so an admission that lands on an evicted entry is discarded (the entry is gone, and what it counted with it) and
/// the layer decides again on the key's live entry with a fresh clock read, never earlier than the eviction's judgement.</para>
/// <para>Members join while the policy is built, before the table holds any key, so every entry has a cell for each.</para>
/// </remarks>
internal sealed class KeyTable<TContext, TKey> : IKeyTable
    where TKey : notnull
{
    private static readonly KeyEntry Tombstone = new();

    private readonly Func<TContext, TKey> _keySelector;
    private readonly PartitionTable<TKey, KeyEntry> _table;
    private readonly LimiterClock _clock;
    private readonly Func<TKey, KeyEntry, bool> _evictIfIdle;
    private readonly Action<int> _makeRoom;
    private readonly long[] _roomSweptAt;
    private IKeyMember[] _members = [];
    private long _sweeps;

    public KeyTable(Func<TContext, TKey> keySelector, IEqualityComparer<TKey>? comparer, LimiterClock clock, int maxKeys)
    {
        _keySelector = keySelector;
        _clock = clock;
        _table = new PartitionTable<TKey, KeyEntry>(comparer ?? EqualityComparer<TKey>.Default, Tombstone, maxKeys);
        _roomSweptAt = new long[_table.ShardCount];
        _evictIfIdle = EvictIfIdle;
        _makeRoom = MakeRoom;
    }

    public int ShardCount => _table.ShardCount;

    /// <summary>Adds a layer while the policy is built; returns the index of its cell in every entry.</summary>
    public int Join(IKeyMember member)
    {
        _members = [.. _members, member];
        return _members.Length - 1;
    }

    /// <summary>The request's key; <paramref name="layer"/> names the asking layer in the error.</summary>
    /// <exception cref="InvalidOperationException">The selector returned null.</exception>
    public TKey SelectKey(TContext context, string layer)
    {
        TKey key = _keySelector(context);
        if (key is null)
        {
            throw new InvalidOperationException($"The key selector of layer '{layer}' returned null.");
        }

        return key;
    }

    /// <summary>
    /// The key's live entry, created if it is new; null when the table is full of live keys, or (with
    /// <paramref name="colliding"/> set) when as many live keys as may share one hash already share the key's.
    /// </summary>
    public KeyEntry? FindOrCreate(TKey key, out bool colliding)
    {
        colliding = false;
        uint hash = _table.Hash(key);
        KeyEntry? entry = _table.Find(key, hash);
        SpinWait spin = default;
        while (entry is not null && ReferenceEquals(Volatile.Read(ref entry.Link), KeyEntry.Gone))
        {
            // Removed, and its slot about to be tombstoned under the shard's lock: wait for that, then look again.
            spin.SpinOnce();
            entry = _table.Find(key, hash);
        }

        if (entry is not null)
        {
            return entry;
        }

        // A flood of new keys against a full table (or of a hash that as many live keys as may share one already have) is
        // refused without the shard's lock once the shard has swept itself this sweep tick, as the partitioned limiter does.
        bool full = _table.IsFullFor(hash);
        KeyEntry? raced = null;
        if ((full || _table.IsCrowded(key, hash, out raced)) && !RoomSweepDue(_table.ShardOf(hash)))
        {
            colliding = !full;
            return null;
        }

        if (raced is not null && !ReferenceEquals(Volatile.Read(ref raced.Link), KeyEntry.Gone))
        {
            return raced; // inserted by another request since the lookup above
        }

        var factory = new NewKeyEntry(this);
        KeyEntry? created = _table.GetOrAdd(key, hash, ref factory, _makeRoom, out AddRefusal why);
        colliding = why == AddRefusal.TooManyCollisions;
        return created;
    }

    /// <summary>The key's entry if it is held and live; never creates one.</summary>
    public KeyEntry? FindLive(TKey key) =>
        _table.Find(key) is { } entry && ReferenceEquals(Volatile.Read(ref entry.Link), this) ? entry : null;



    public void Sweep(int shard)
    {
        Interlocked.Increment(ref _sweeps);
        _table.Sweep(shard, _evictIfIdle);
    }

    private KeyEntry CreateEntry()
    {
        // Allocated together, so a key's cells sit side by side on the heap; their states count from the current window.
        IKeyMember[] members = _members;
        long now = _clock.Now();
        KeyEntry entry = members[0].CreateCell(now);
        if (members.Length > 1)
        {
            var siblings = new KeyEntry[members.Length - 1];
            for (int i = 0; i < siblings.Length; i++)
            {
                siblings[i] = members[i + 1].CreateCell(now);
            }

            entry.Siblings = siblings;
        }

        entry.Link = this;
        return entry;
    }

    /// <summary>Makes a new key's entry (see <see cref="CreateEntry"/>).</summary>
    private readonly struct NewKeyEntry(KeyTable<TContext, TKey> table) : IEntryFactory<TKey, KeyEntry>
    {
        public KeyEntry Create(TKey key) => table.CreateEntry();
    }

    /// <summary>Under the shard's lock, at most once per sweep tick: a full shard sweeps itself before refusing a key.</summary>
    private void MakeRoom(int shard)
    {
        if (RoomSweepDue(shard))
        {
            Volatile.Write(ref _roomSweptAt[shard], Volatile.Read(ref _sweeps) + 1);
            _table.SweepHeld(shard, _evictIfIdle);
        }
    }

    private bool RoomSweepDue(int shard) => Volatile.Read(ref _roomSweptAt[shard]) != Volatile.Read(ref _sweeps) + 1;

    public Action? BeforeEvictionMark { get; set; }

    /// <summary>Under the shard's lock: evicts the entry if every cell is indistinguishable from a fresh one.</summary>
    private bool EvictIfIdle(TKey key, KeyEntry entry)
    {
        long now = _clock.Now();
        if (!AllIdle(entry, now))
        {
            return false;
        }

        BeforeEvictionMark?.Invoke();

        // Mark, then re-check: pairs with the admitting layer's CAS-then-read (see remarks). The re-check runs the layers'
        // idle checks again (a bucket far behind reads the clock): one that throws must not leave the key marked, or every
        // request on it would wait for the end of a sweep that never ends.
        if (Interlocked.CompareExchange(ref entry.Link, KeyEntry.Evicting, this) != this)
        {
            return false;
        }

        bool evicted = false;
        try
        {
            evicted = AllIdle(entry, _clock.Now()); // at a reading after the mark (see the partitioned limiter's EvictIfIdle)
        }
        finally
        {
            Volatile.Write(ref entry.Link, evicted ? KeyEntry.Gone : this);
        }

        return evicted;
    }

    private bool AllIdle(KeyEntry entry, long now)
    {
        IKeyMember[] members = _members;
        for (int i = 0; i < members.Length; i++)
        {
            if (!members[i].IsIdle(entry.Cell(i), now))
            {
                return false;
            }
        }

        return true;
    }
}
