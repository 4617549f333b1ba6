using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using RateEngine.Algorithms;

namespace RateEngine.Partitioning;

/// <summary>
/// A sharded open-addressing hash table from keys to per-key entries, built for millions of keys that an attacker may
/// choose. Lookups of existing keys take no lock; creating or removing a key locks one shard.
/// </summary>
/// <remarks>
/// <para>Each shard publishes an immutable-size <see cref="Slots"/>. A reader probes it linearly until it
/// finds the key or an empty slot. A writer fills the key first and publishes the entry last (a release write), so a
/// reader that sees an entry sees its key. Removal writes a tombstone; tombstones are dropped when the shard rebuilds.
/// A rebuild copies entries (references) into new arrays and publishes them in one write: entries never move, so a
/// reader still probing the old arrays finds the same entry objects.</para>
/// <para><b>The bound</b>: live entries never exceed the maximum, table-wide. Shards draw capacity from one shared pool in
/// chunks (about 1/4096 of the maximum) and hand whole chunks back as they empty, so the shared counter is touched once
/// per chunk, not per key, and no shard is capped on its own: an attacker who aims every key at one shard cannot lock
/// out the others early. Capacity held by shards but not yet used is at most one or two chunks per shard.</para>
/// <para>Memory per key is the slot (the key plus an 8-byte reference, at a load factor of at most 3/4 and, while a
/// shard's keys stay, at least 1/4; a shard's slots never shrink, so after evictions it keeps its peak size, which the
/// shared capacity and the secret seed bound) plus the entry object; no lock or limiter object per key. Reference-type keys
/// (strings) also keep their hash code in the slot, 4 bytes (8 with padding): a probe compares it before calling
/// <c>Equals</c>, which would read a string somewhere else on the heap, and a rebuild reuses it instead of hashing every
/// key again. Their key, hash and entry reference sit in one struct, so a probe misses the cache once, not three times.</para>
/// <para><b>Hostile keys</b>: the index is a multiply-add-shift hash of the key's hash code with a secret, random
/// multiplier and addend per table, a universal family: keys crafted offline to collide in one table spread out in
/// another, so probe runs stay as short as for random keys. What no seed can spread is keys whose hash codes are equal (a
/// degenerate comparer, or hash codes an attacker can choose, such as <c>long</c> keys folded to 32 bits): at most
/// <see cref="MaxSameHash"/> keys with one hash are held, and a further one is refused, so that no probe run grows
/// without bound. An attacker who can choose hash codes can still fill the table with such groups, which lengthens probe
/// runs by about that factor, and can keep one computed hash code's slots taken (refusing that one key): keys whose hash
/// codes callers cannot choose (strings with the default randomized comparer, or a keyed comparer) rule both out.</para>
/// <para>The arrays hold structs, not the keys and entries themselves: a store into an array of a reference type that
/// shared generic code cannot see is sealed pays a covariance check that reads the stored object, one cache miss per
/// entry in a rebuild.</para>
/// </remarks>
internal sealed class PartitionTable<TKey, TEntry>
    where TKey : notnull
    where TEntry : class
{
    /// <summary>
    /// The most live keys that may share one hash (see remarks: hostile keys). Four distinct keys of random-looking
    /// hashes meet in one 32-bit hash about once in 10^5 tables of a million keys; groups of four keep probe runs within
    /// a small factor of a random table's even when an attacker fills the table with them.
    /// </summary>
    public const int MaxSameHash = 4;

    private const int ShardBits = 6;
    private const int MinimumSlots = 16;

    /// <summary>
    /// Whether slots keep hash codes: for keys whose <c>Equals</c> or <c>GetHashCode</c> costs a trip to the heap
    /// (strings, and structs that hold references, such as tuples of strings).
    /// </summary>
    /// <remarks>
    /// A property, not a static field: the JIT folds it to a constant even in code shared across entry types, where
    /// reading a static field costs a lookup of the generic statics on every probe.
    /// </remarks>
    private static bool StoreHashes => RuntimeHelpers.IsReferenceOrContainsReferences<TKey>();

    private readonly Shard[] _shards = new Shard[1 << ShardBits];
    private readonly IEqualityComparer<TKey> _comparer;
    private readonly TEntry _tombstone;
    private readonly int _chunk;
    private readonly ulong _multiplier;
    private readonly ulong _addend;
    private long _pool;
    private int _longestProbe;

    /// <param name="comparer">Key equality.</param>
    /// <param name="tombstone">A sentinel entry that marks a removed slot; never handed out.</param>
    /// <param name="maxEntries">The most live entries the table holds.</param>
    /// <param name="seed">The hash's multiplier and addend; random unless a test needs to know them.</param>
    public PartitionTable(IEqualityComparer<TKey> comparer, TEntry tombstone, int maxEntries, (ulong Multiplier, ulong Addend)? seed = null)
    {
        (ulong multiplier, ulong addend) = seed ?? RandomSeed();
        _multiplier = multiplier | 1;
        _addend = addend;
        _comparer = comparer;
        _tombstone = tombstone;
        _pool = maxEntries;
        _chunk = Math.Max(1, maxEntries / 4096);
        for (int i = 0; i < _shards.Length; i++)
        {
            _shards[i] = new Shard(MinimumSlots);
        }
    }

    public int ShardCount => _shards.Length;

    /// <summary>Live entries in all shards (a moment's sum; shards change independently).</summary>
    public long Count => _shards.Sum(shard => (long)Volatile.Read(ref shard.Live));

    /// <summary>The longest probe any insertion has made (from a key's home slot to its own), for tests and diagnostics.</summary>
    public int LongestProbe => Volatile.Read(ref _longestProbe);

    /// <summary>The table's hash of <paramref name="key"/>, for callers that look a key up more than once.</summary>
    /// <remarks>
    /// Multiply-add-shift with the table's secret (see remarks): the top bits pick the shard, the next ones the slot.
    /// </remarks>
    public uint Hash(TKey key) => (uint)((((ulong)(uint)_comparer.GetHashCode(key) * _multiplier) + _addend) >> 32);

    /// <summary>The shard a hash belongs to.</summary>
    public int ShardOf(uint hash) => (int)(hash >> (32 - ShardBits));

    /// <summary>
    /// A lock-free hint that a new key with this hash would be refused for want of capacity: its shard holds no spare
    /// capacity and the table's pool is empty. Exact when nothing changes meanwhile; a caller that relies on it may
    /// refuse a key that an entry freed an instant ago would have let in, as a racing <see cref="GetOrAdd"/> could.
    /// </summary>
    public bool IsFullFor(uint hash) =>
        Volatile.Read(ref _shards[ShardOf(hash)].Budget) == 0 && Volatile.Read(ref _pool) <= 0;

    /// <summary>
    /// Whether <see cref="MaxSameHash"/> live keys of <paramref name="hash"/> are in the table, so that <paramref name="key"/>,
    /// which a <see cref="Find(TKey, uint)"/> just missed, would be refused: read without the lock, so that a caller can
    /// refuse a flood of colliding keys (hostile hash codes) before its options resolver and the shard's lock, as it
    /// refuses a flood against a full table. The key itself, inserted since that miss, is handed back in
    /// <paramref name="found"/> instead. Racing a sweep or a rebuild the count may be off by what they change (a key just
    /// removed still counted: refused for the moment, stricter; one just added missed: the locked path decides).
    /// </summary>
    public bool IsCrowded(TKey key, uint hash, out TEntry? found)
    {
        found = null;
        Slots slots = Volatile.Read(ref _shards[ShardOf(hash)].Current);
        int mask = slots.Length - 1;
        int sameHash = 0;
        for (int i = (int)hash & mask; ; i = (i + 1) & mask)
        {
            TEntry? entry = Volatile.Read(ref slots.Entry(i));
            if (entry is null)
            {
                return false;
            }

            // As in Find: a key a sweep is clearing is never handed to the comparer (a stored hash is read instead).
            if (!ReferenceEquals(entry, _tombstone) && HashAt(slots, i) == hash && slots.Key(i) is { } candidate)
            {
                if (_comparer.Equals(candidate, key))
                {
                    found = entry;
                    return false;
                }

                if (++sameHash >= MaxSameHash)
                {
                    return true;
                }
            }
        }
    }

    /// <summary>Finds the entry of <paramref name="key"/> without locking.</summary>
    public TEntry? Find(TKey key) => Find(key, Hash(key));

    /// <summary>Finds the entry of <paramref name="key"/>, whose <see cref="Hash"/> is <paramref name="hash"/>, without locking.</summary>
    public TEntry? Find(TKey key, uint hash)
    {
        Slots slots = Volatile.Read(ref _shards[ShardOf(hash)].Current);
        int mask = slots.Length - 1;
        for (int i = (int)hash & mask; ; i = (i + 1) & mask)
        {
            // The entry is published last (see GetOrAdd), so reading it first makes the key and hash below visible.
            TEntry? entry = Volatile.Read(ref slots.Entry(i));
            if (entry is null)
            {
                return null;
            }

            // A sweep running now may have cleared the key of an entry read just before it became a tombstone: never
            // hand a caller's comparer that default key (it may not expect null), and do not match it.
            if ((!StoreHashes || slots.Hash(i) == hash)
                && !ReferenceEquals(entry, _tombstone)
                && slots.Key(i) is { } candidate
                && _comparer.Equals(candidate, key))
            {
                return entry;
            }
        }
    }

    /// <summary>
    /// Finds or creates the entry of <paramref name="key"/>, for a caller whose lock-free <see cref="Find(TKey, uint)"/> just missed.
    /// Returns null, saying why in <paramref name="refusal"/>, when the table is full of live entries even after
    /// <paramref name="makeRoom"/> (called under the shard's lock) had its chance to remove idle ones from that shard, or
    /// when <see cref="MaxSameHash"/> live keys already share the key's hash. <paramref name="factory"/> is called only when
    /// this call adds the key, under the shard's lock, after any sweep or rebuild it needed.
    /// </summary>
    public TEntry? GetOrAdd<TFactory>(TKey key, uint hash, ref TFactory factory, Action<int>? makeRoom, out AddRefusal refusal)
        where TFactory : struct, IEntryFactory<TKey, TEntry>
    {
        Debug.Assert(key is not null);
        Debug.Assert(hash == Hash(key));
        TEntry? existing;
        refusal = AddRefusal.None;
        int shardIndex = ShardOf(hash);
        Shard shard = _shards[shardIndex];

        // Re-entered from the maker (a time provider that calls into its own limiter), a nested insert or rebuild would
        // leave this call's slot index stale.
        Debug.Assert(!Monitor.IsEntered(shard), "GetOrAdd re-entered on its own shard");
        lock (shard)
        {
            existing = Find(key, hash);
            if (existing is not null)
            {
                return existing;
            }

            if (shard.Budget == 0 && !Borrow(shard))
            {
                makeRoom?.Invoke(shardIndex);
                if (shard.Budget == 0 && !Borrow(shard))
                {
                    refusal = AddRefusal.Full;
                    return null;
                }
            }

            // From here on user code runs (the comparer, the entry's maker, which may read a custom clock): if it throws, the
            // capacity borrowed for this key goes back beyond what a shard keeps, as on a refusal.
            try
            {
                Slots slots = shard.Current;
                if ((shard.Live + shard.Tombstones + 1) * 4 > slots.Length * 3)
                {
                    slots = Rebuild(shard);
                }

                // Walk the probe run to its end, counting the live keys that share this hash. Four of them refuse the key, after
                // one sweep of the shard for idle keys, as a full table does: idle keys of that hash must not keep it out until
                // the periodic sweep reaches this shard (a refusal's RETRY_AFTER is one sweep period).
                int i = EndOfRun(slots, hash, out int probes, out int sameHash);
                if (sameHash >= MaxSameHash && makeRoom is not null)
                {
                    makeRoom(shardIndex);
                    slots = shard.Current;
                    i = EndOfRun(slots, hash, out probes, out sameHash);

                    // The sweep gave what it freed back beyond what a shard keeps, and the unit borrowed above with it.
                    if (shard.Budget == 0 && !Borrow(shard))
                    {
                        refusal = AddRefusal.Full;
                        return null;
                    }
                }

                if (sameHash >= MaxSameHash)
                {
                    // Capacity borrowed above for this key goes back beyond what a shard keeps, as on a removal.
                    Release(shard, 0);
                    refusal = AddRefusal.TooManyCollisions;
                    return null;
                }

                RaiseLongestProbe(probes);

                TEntry entry = factory.Create(key);

                slots.Key(i) = key;
                if (StoreHashes)
                {
                    slots.Hash(i) = hash;
                }

                Volatile.Write(ref slots.Entry(i), entry);
                Volatile.Write(ref shard.Live, shard.Live + 1);
                Debug.Assert(shard.Budget > 0, "a key goes in only on capacity its shard holds");
                shard.Budget--;
                return entry;
            }
            catch
            {
                Release(shard, 0);
                throw;
            }
        }
    }

    /// <summary>
    /// The first empty slot of <paramref name="hash"/>'s probe run (where a new key goes), the probes it took, and how many
    /// live keys in the run share the hash (counted up to <see cref="MaxSameHash"/>).
    /// </summary>
    private int EndOfRun(Slots slots, uint hash, out int probes, out int sameHash)
    {
        int mask = slots.Length - 1;
        int i = (int)hash & mask;
        probes = 0;
        sameHash = 0;
        for (TEntry? occupant; (occupant = slots.Entry(i)) is not null; i = (i + 1) & mask, probes++)
        {
            if (!ReferenceEquals(occupant, _tombstone) && HashAt(slots, i) == hash && ++sameHash >= MaxSameHash)
            {
                return i;
            }
        }

        return i;
    }

    /// <summary>
    /// Visits the live entries of one shard under its lock; <paramref name="remove"/> decides, per entry, whether it
    /// goes. Returns how many were removed.
    /// </summary>
    public int Sweep(int shardIndex, Func<TKey, TEntry, bool> remove)
    {
        Shard shard = _shards[shardIndex];
        lock (shard)
        {
            return SweepLocked(shard, remove);
        }
    }

    /// <summary><see cref="Sweep"/> for a caller that already holds the shard's lock (see <see cref="GetOrAdd"/>).</summary>
    public int SweepHeld(int shardIndex, Func<TKey, TEntry, bool> remove)
    {
        Shard shard = _shards[shardIndex];
        Debug.Assert(Monitor.IsEntered(shard));
        return SweepLocked(shard, remove);
    }

    /// <summary>Every live entry, shard by shard (each shard's view is consistent; the whole is not a snapshot).</summary>
    public IEnumerable<TEntry> Entries()
    {
        foreach (Shard shard in _shards)
        {
            Slots slots = Volatile.Read(ref shard.Current);
            for (int i = 0; i < slots.Length; i++)
            {
                TEntry? entry = Volatile.Read(ref slots.Entry(i));
                if (entry is not null && !ReferenceEquals(entry, _tombstone))
                {
                    yield return entry;
                }
            }
        }
    }

    private int SweepLocked(Shard shard, Func<TKey, TEntry, bool> remove)
    {
        Slots slots = shard.Current;
        int removed = 0;
        try
        {
            RemoveWhere(slots, remove, ref removed);
        }
        finally
        {
            // Also when remove threw part-way (user code: a clock, a comparer): the entries it removed so far are gone, so
            // their capacity comes back, or the table would hold that much less for good.
            Release(shard, removed);
        }

        return removed;
    }

    /// <summary>Tombstones the live entries <paramref name="remove"/> picks, counting each in <paramref name="removed"/> as it goes.</summary>
    private void RemoveWhere(Slots slots, Func<TKey, TEntry, bool> remove, ref int removed)
    {
        for (int i = 0; i < slots.Length; i++)
        {
            TEntry? entry = slots.Entry(i);
            if (entry is not null && !ReferenceEquals(entry, _tombstone) && remove(slots.Key(i), entry))
            {
                Volatile.Write(ref slots.Entry(i), _tombstone);
                // Do not keep a removed string key alive until the next rebuild. A struct key stays: a reader racing this
                // write could read it torn (half cleared) and hand a caller's comparer a key that was never passed in.
                if (!typeof(TKey).IsValueType)
                {
                    slots.Key(i) = default!;
                }
                removed++;
            }
        }
    }

    /// <summary>Counts <paramref name="removed"/> entries out of the shard and hands spare capacity back to the pool.</summary>
    private void Release(Shard shard, int removed)
    {
        Volatile.Write(ref shard.Live, shard.Live - removed);
        shard.Tombstones += removed;
        shard.Budget += removed;

        // Hand whole chunks back beyond two, so that emptied shards do not hoard the table's capacity: at most 128 chunks,
        // 1/32 of the table, sit spare in shards. A table too small for chunks of more than one key keeps no spare at all,
        // or its shards' spare could be most of it (a shard that holds no keys would refuse new ones for want of it).
        int keep = _chunk > 1 ? 2 * _chunk : 0;
        if (shard.Budget > keep)
        {
            int giveBack = keep == 0 ? shard.Budget : (shard.Budget - _chunk) / _chunk * _chunk;
            shard.Budget -= giveBack;
            Interlocked.Add(ref _pool, giveBack);
        }
    }

    private void RaiseLongestProbe(int probes)
    {
        int longest = Volatile.Read(ref _longestProbe);
        while (probes > longest)
        {
            int seen = Interlocked.CompareExchange(ref _longestProbe, probes, longest);
            if (seen == longest)
            {
                return;
            }

            longest = seen;
        }
    }

    /// <summary>The stored hash of a live slot, or (for value-type keys, whose slots keep none) the key's hash again.</summary>
    private uint HashAt(Slots slots, int i) => StoreHashes ? slots.Hash(i) : Hash(slots.Key(i));

    private static (ulong Multiplier, ulong Addend) RandomSeed()
    {
        Span<ulong> seed = stackalloc ulong[2];
        RandomNumberGenerator.Fill(MemoryMarshal.AsBytes(seed));
        return (seed[0], seed[1]);
    }

    /// <summary>Takes up to one chunk of capacity from the shared pool for <paramref name="shard"/>. Under the shard's lock.</summary>
    private bool Borrow(Shard shard)
    {
        while (true)
        {
            long available = Volatile.Read(ref _pool);
            if (available <= 0)
            {
                return false;
            }

            long take = Math.Min(available, _chunk);
            if (Interlocked.CompareExchange(ref _pool, available - take, available) == available)
            {
                shard.Budget += (int)take;
                return true;
            }
        }
    }

    /// <summary>Copies the live entries into arrays sized for them and publishes the copy. Under the shard's lock.</summary>
    private Slots Rebuild(Shard shard)
    {
        Slots old = shard.Current;

        // Double only when live entries alone would fill more than half: a rebuild that just clears tombstones keeps
        // the size, so a full shard sits at a load between 1/2 and 3/4 (about 20 bytes of slots per int key).
        int size = old.Length;
        while ((long)(shard.Live + 1) * 2 > size)
        {
            size *= 2;
        }

        var rebuilt = new Slots(size);
        int mask = size - 1;
        for (int i = 0; i < old.Length; i++)
        {
            TEntry? entry = old.Entry(i);
            if (entry is null || ReferenceEquals(entry, _tombstone))
            {
                continue;
            }

            uint hash = HashAt(old, i);
            int j = (int)hash & mask;
            while (rebuilt.Entry(j) is not null)
            {
                j = (j + 1) & mask;
            }

            rebuilt.Key(j) = old.Key(i);
            if (StoreHashes)
            {
                rebuilt.Hash(j) = hash;
            }

            rebuilt.Entry(j) = entry;
        }

        shard.Tombstones = 0;
        Volatile.Write(ref shard.Current, rebuilt);
        return rebuilt;
    }

    /// <summary>
    /// One shard's slots. Keys that keep hashes (see <see cref="StoreHashes"/>) keep key, hash and entry side by side, so a
    /// probe reads one cache line, not three; value-type keys (ints) keep keys and entries in two arrays, where an int key's
    /// slot takes 12 bytes instead of a padded 16.
    /// </summary>
    private sealed class Slots
    {
        private readonly WideSlot[]? _wide;
        private readonly KeySlot[]? _keys;
        private readonly EntrySlot[]? _entries;

        public Slots(int size)
        {
            Length = size;
            if (StoreHashes)
            {
                _wide = FreshArray.WrittenThrough(new WideSlot[size]);
            }
            else
            {
                _keys = FreshArray.WrittenThrough(new KeySlot[size]);
                _entries = FreshArray.WrittenThrough(new EntrySlot[size]);
            }
        }

        public int Length { get; }

        public ref TEntry? Entry(int i) => ref StoreHashes ? ref _wide![i].Entry : ref _entries![i].Entry;

        public ref TKey Key(int i) => ref StoreHashes ? ref _wide![i].Key : ref _keys![i].Key;

        public ref uint Hash(int i) => ref _wide![i].Hash;
    }

    private struct WideSlot
    {
        public TEntry? Entry;
        public TKey Key;
        public uint Hash;
    }

    private struct KeySlot
    {
        public TKey Key;
    }

    private struct EntrySlot
    {
        public TEntry? Entry;
    }

    private sealed class Shard(int size)
    {
        public Slots Current = new(size);
        public int Live;
        public int Tombstones;

        /// <summary>Capacity borrowed from the table's pool and not yet used by a live entry.</summary>
        public int Budget;

    }
}
