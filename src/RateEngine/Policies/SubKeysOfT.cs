using System.Runtime.CompilerServices;
using RateEngine.Timing;

namespace RateEngine.Policies;

/// <inheritdoc cref="SubKeys{TContext,TState}"/>
internal sealed class SubKeys<TContext, TSubKey, TState>(
    Func<TContext, TSubKey> selector,
    IEqualityComparer<TSubKey>? comparer,
    int maxPerKey,
    LimiterClock clock,
    Func<TState> createState,
    Func<LayerEntry<TState>, long, bool> isIdle) : SubKeys<TContext, TState>
    where TSubKey : notnull
{
    private readonly IEqualityComparer<TSubKey> _comparer = comparer ?? EqualityComparer<TSubKey>.Default;

    public override string FullReason(string layer) =>
        $"The request's key already has {maxPerKey} sub-keys in use on layer '{layer}': no room for another.";

    public override KeyEntry CreateMap() => new SubKeyMap<TSubKey, TState>();

    public override LayerEntry<TState>? FindOrCreate(KeyEntry map, TContext context, string layer)
    {
        var subKeys = Unsafe.As<SubKeyMap<TSubKey, TState>>(map);
        TSubKey subKey = Select(context, layer);
        return Find(subKeys, subKey) ?? Add(subKeys, subKey);
    }

    public override LayerEntry<TState>? FindLive(KeyEntry map, TContext context, string layer) =>
        Find(Unsafe.As<SubKeyMap<TSubKey, TState>>(map), Select(context, layer)) is { } cell && ReferenceEquals(Volatile.Read(ref cell.Link), map)
            ? cell
            : null;

    public override bool IsLost(KeyEntry map, LayerEntry<TState> cell, TContext context, string layer)
    {
        // The dropping thread holds the map's lock between its mark and its publish: wait for one or the other.
        SpinWait spin = default;
        while (ReferenceEquals(Volatile.Read(ref cell.Link), KeyEntry.Evicted))
        {
            if (!ReferenceEquals(Find(Unsafe.As<SubKeyMap<TSubKey, TState>>(map), Select(context, layer)), cell))
            {
                return true;
            }

            spin.SpinOnce();
        }

        return false;
    }

    public override bool AllIdle(KeyEntry map, long now)
    {
        foreach (SubKeyMap<TSubKey, TState>.Slot slot in InUse(Unsafe.As<SubKeyMap<TSubKey, TState>>(map)))
        {
            if (!isIdle(slot.Cell, now))
            {
                return false;
            }
        }

        return true;
    }

    public override object KeyOf<TKey>(TKey key, TContext context, string layer) => (key, Select(context, layer));

    private TSubKey Select(TContext context, string layer)
    {
        TSubKey subKey = selector(context);
        if (subKey is null)
        {
            throw new InvalidOperationException($"The sub-key selector of layer '{layer}' returned null.");
        }

        return subKey;
    }

    /// <summary>
    /// The slots in use: the array first, then the count, clamped to the array. A count read after the array never counts
    /// a slot the array lacks: an added slot is filled before it is counted, a grown array is published before the slot
    /// it makes room for, and a shrunk one after the count was cleared (see <see cref="DropIdle"/>).
    /// </summary>
    private static ReadOnlySpan<SubKeyMap<TSubKey, TState>.Slot> InUse(SubKeyMap<TSubKey, TState> map)
    {
        SubKeyMap<TSubKey, TState>.Slot[] slots = Volatile.Read(ref map.Slots);
        return slots.AsSpan(0, Math.Min(Volatile.Read(ref map.Count), slots.Length));
    }

    private LayerEntry<TState>? Find(SubKeyMap<TSubKey, TState> map, TSubKey subKey)
    {
        foreach (SubKeyMap<TSubKey, TState>.Slot slot in InUse(map))
        {
            if (_comparer.Equals(slot.Key, subKey))
            {
                return slot.Cell;
            }
        }

        return null;
    }

    private LayerEntry<TState>? Add(SubKeyMap<TSubKey, TState> map, TSubKey subKey)
    {
        lock (map)
        {
            if (Find(map, subKey) is { } raced)
            {
                return raced;
            }

            if (map.Count >= maxPerKey)
            {
                DropIdle(map);
                if (map.Count >= maxPerKey)
                {
                    return null;
                }
            }

            if (map.Count == map.Slots.Length)
            {
                var larger = new SubKeyMap<TSubKey, TState>.Slot[Math.Min(2 * map.Slots.Length, maxPerKey)];
                map.Slots.CopyTo(larger, 0);
                Volatile.Write(ref map.Slots, larger);
            }

            var cell = new LayerEntry<TState> { State = createState(), Link = map };
            map.Slots[map.Count] = new(subKey, cell);
            Volatile.Write(ref map.Count, map.Count + 1);
            return cell;
        }
    }

    /// <summary>
    /// Under the map's lock: drops the sub-keys whose cells are idle, by the mark-then-re-check protocol, into a new array
    /// (readers may still be scanning the old one, whose slots must not change under them).
    /// </summary>
    private void DropIdle(SubKeyMap<TSubKey, TState> map)
    {
        long now = clock.Now();
        var kept = new List<SubKeyMap<TSubKey, TState>.Slot>(map.Count);
        foreach (SubKeyMap<TSubKey, TState>.Slot slot in map.Slots.AsSpan(0, map.Count))
        {
            bool drop = isIdle(slot.Cell, now)
                && Interlocked.CompareExchange(ref slot.Cell.Link, KeyEntry.Evicted, map) == map;
            if (drop && !isIdle(slot.Cell, now))
            {
                Interlocked.CompareExchange(ref slot.Cell.Link, map, KeyEntry.Evicted);
                drop = false;
            }

            if (!drop)
            {
                kept.Add(slot);
            }
        }

        var remaining = new SubKeyMap<TSubKey, TState>.Slot[map.Slots.Length];
        kept.CopyTo(remaining);
        Volatile.Write(ref map.Count, 0); // before the new array: a reader of it then counts 0 or the kept slots, never the old count
        Volatile.Write(ref map.Slots, remaining);
        Volatile.Write(ref map.Count, kept.Count);
    }
}
