using System.Runtime.CompilerServices;
using RateEngine.Timing;

namespace RateEngine.Policies;

/// <inheritdoc cref="SubKeys{TContext,TState}"/>
internal sealed class SubKeys<TContext, TSubKey, TState>(
    Func<TContext, TSubKey> selector,
    IEqualityComparer<TSubKey>? comparer,
    int maxPerKey,
    LimiterClock clock,
    Func<long, TState> createState,
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
        return Find(subKeys, subKey) is { } found && !ReferenceEquals(Volatile.Read(ref found.Link), KeyEntry.Gone)
            ? found
            : Add(subKeys, subKey);
    }

    public override LayerEntry<TState>? FindLive(KeyEntry map, TContext context, string layer) =>
        Find(Unsafe.As<SubKeyMap<TSubKey, TState>>(map), Select(context, layer)) is { } cell && ReferenceEquals(Volatile.Read(ref cell.Link), map)
            ? cell
            : null;

    public override bool AllIdle(KeyEntry map, long now)
    {
        foreach (SubKeyMap<TSubKey, TState>.Slot slot in Volatile.Read(ref Unsafe.As<SubKeyMap<TSubKey, TState>>(map).Slots))
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

    private LayerEntry<TState>? Find(SubKeyMap<TSubKey, TState> map, TSubKey subKey)
    {
        foreach (SubKeyMap<TSubKey, TState>.Slot slot in Volatile.Read(ref map.Slots))
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
                return raced; // under the lock, every cell in the array is live
            }

            if (map.Slots.Length >= maxPerKey && !DropIdle(map))
            {
                return null;
            }

            var cell = new LayerEntry<TState> { State = createState(clock.Now()), Link = map };
            Volatile.Write(ref map.Slots, [.. map.Slots, new(subKey, cell)]);
            return cell;
        }
    }

    /// <summary>
    /// Under the map's lock: drops the sub-keys whose cells are idle, by the mark, re-check, commit protocol, and
    /// publishes what is left as a new array (readers may still be scanning the old one). False when none was idle.
    /// </summary>
    private bool DropIdle(SubKeyMap<TSubKey, TState> map)
    {
        long now = clock.Now();
        SubKeyMap<TSubKey, TState>.Slot[] slots = map.Slots;
        try
        {
            foreach (SubKeyMap<TSubKey, TState>.Slot slot in slots)
            {
                LayerEntry<TState> cell = slot.Cell;
                if (isIdle(cell, now) && Interlocked.CompareExchange(ref cell.Link, KeyEntry.Evicting, map) == map)
                {
                    // A re-check that throws (an idle check may read the clock) puts the cell back rather than leave it marked.
                    bool idle = false;
                    try
                    {
                        idle = isIdle(cell, clock.Now()); // at a reading after the mark (see the partitioned limiter's EvictIfIdle)
                    }
                    finally
                    {
                        Volatile.Write(ref cell.Link, idle ? KeyEntry.Gone : map);
                    }
                }
            }
        }
        finally
        {
            // Whatever threw, the cells marked gone leave the array: under the lock, every cell in it is live (see Add).
            SubKeyMap<TSubKey, TState>.Slot[] live = [.. slots.Where(slot => !ReferenceEquals(Volatile.Read(ref slot.Cell.Link), KeyEntry.Gone))];
            if (live.Length != slots.Length)
            {
                Volatile.Write(ref map.Slots, live);
            }
        }

        return !ReferenceEquals(map.Slots, slots);
    }
}
