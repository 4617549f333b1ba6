using System.Diagnostics;

namespace RateEngine.Algorithms;

/// <summary>
/// The exact sliding window: a ring of the last <c>PermitLimit</c> admitted permits' timestamps. A request for n permits
/// at t is admitted exactly when the window (t - W, t] holds at most L - n permits.
/// </summary>
/// <remarks>
/// <para><b>Tickets</b>: every admitted permit takes the next ticket k (the tail moves by n in one CAS); ticket k lives in
/// slot k mod L, the slot ticket k - L used before it.</para>
/// <para><b>Invariant</b>: stamps are non-decreasing in ticket order, and at the CAS that takes ticket k every ticket
/// before k is published (its stamp written, then its sequence set to k with a release write). Then tickets k+n-1-L and
/// older are all at or before the stamp of k+n-1-L, so "that one stamp is outside the window" means "the window holds at
/// most L - n", which is the whole decision: O(1), exact in both directions.</para>
/// <para><b>Ring reuse</b> (the trap in DESIGN.md): ticket k + L reads the slot that ticket k writes. A taker therefore
/// waits until its predecessor (ticket T - 1) is published before deciding; by induction every older ticket is then
/// published too, so no decision ever reads a stale slot. The wait covers the two stores between a winner's CAS and its
/// publish, so it is a spin, never a block on another decision.</para>
/// <para><b>Monotone stamps</b>: a taker decides at max(its clock read, its predecessor's stamp). That keeps stamps ordered
/// when threads read the clock in one order and win the CAS in another, and it clamps a clock that went backwards.
/// The stamp lies between the taker's clock read and its CAS.</para>
/// <para><b>Linearization point</b>: the CAS of the tail.</para>
/// <para><b>Refund</b> is exact when no ticket was taken since: the tail is locked (stored as ~tail), the overwritten slots
/// get their previous stamps back, and the tail is put back. Once someone took a later ticket the permits stay counted
/// until they leave the window: freeing a slot in the middle of the ring would break the ordering the decision relies on.</para>
/// </remarks>
internal readonly struct SlidingWindowLog : IRateAlgorithm<LogState>
{
    /// <summary>The stamp of a slot no ticket has used: expired at any time, with room to subtract a window.</summary>
    internal const long NeverStamp = long.MinValue / 4;

    private readonly int _limit;
    private readonly long _window;

    public SlidingWindowLog(int permitLimit, long windowTicks)
    {
        Debug.Assert(permitLimit > 0);
        Debug.Assert(windowTicks > 0);
        _limit = permitLimit;
        _window = windowTicks;
    }

    public long PermitLimit => _limit;

    public LogState CreateState() => new(_limit);

    public bool TryAcquire(ref LogState state, long now, int permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        LogSlot[] slots = state.Slots;
        SpinWait spin = default;
        while (true)
        {
            long tail = Volatile.Read(ref state.Tail);
            if (tail < 0)
            {
                // A refund holds the tail while it restores slots.
                spin.SpinOnce();
                continue;
            }

            long stamp = now;
            int next = 0;
            if (tail > 0)
            {
                int last = (int)((tail - 1) % _limit);
                ref LogSlot predecessor = ref slots[last];
                if (Volatile.Read(ref predecessor.Sequence) != tail - 1)
                {
                    // The predecessor won its CAS but has not published its stamp yet.
                    spin.SpinOnce();
                    continue;
                }

                stamp = Math.Max(now, predecessor.Stamp);
                next = last + 1 == _limit ? 0 : last + 1;
            }

            // The newest ticket that must be out of the window: tail + permits - 1 - L, in slot (tail + permits - 1) mod L.
            if (tail + permits - 1 >= _limit)
            {
                int oldest = next + permits - 1;
                if (oldest >= _limit)
                {
                    oldest -= _limit;
                }

                long oldestStamp = Volatile.Read(ref slots[oldest].Stamp);
                if (stamp - oldestStamp < _window)
                {
                    if (Volatile.Read(ref state.Tail) != tail)
                    {
                        continue; // the ring moved while we read it: decide again on a consistent view
                    }

                    admission = default;
                    retryAfter = oldestStamp + _window - now;
                    return false;
                }
            }

            // Linearization point.
            if (Interlocked.CompareExchange(ref state.Tail, tail + permits, tail) != tail)
            {
                continue;
            }

            // Publish in ticket order, the last ticket last: a successor waits for exactly that one.
            int index = next;
            for (int i = 0; i < permits; i++)
            {
                ref LogSlot slot = ref slots[index];
                slot.Previous = slot.Stamp;
                slot.Stamp = stamp;
                Volatile.Write(ref slot.Sequence, tail + i);
                index = index + 1 == _limit ? 0 : index + 1;
            }

            admission = new Admission(stamp, permits, tail, 0);
            retryAfter = 0;
            return true;
        }
    }

    public bool Refund(ref LogState state, in Admission admission)
    {
        long first = admission.Marker;
        long end = first + admission.Permits;

        // Lock the tail only if nobody took a ticket after ours; otherwise keep the permits counted (see remarks).
        if (Interlocked.CompareExchange(ref state.Tail, ~end, end) != end)
        {
            return false;
        }

        // Every ticket before `end` is published and no one can take one now, so the slots are ours to restore.
        LogSlot[] slots = state.Slots;
        int index = (int)(first % _limit);
        for (long ticket = first; ticket < end; ticket++)
        {
            ref LogSlot slot = ref slots[index];
            slot.Stamp = slot.Previous;
            slot.Sequence = ticket - _limit;
            index = index + 1 == _limit ? 0 : index + 1;
        }

        Volatile.Write(ref state.Tail, first);
        return true;
    }

    public long GetAvailablePermits(ref LogState state, long now)
    {
        long tail = ReadTail(state, out long stamp, now);
        if (tail == 0)
        {
            return _limit;
        }

        // Stamps are ordered by ticket: binary-search the oldest ticket still inside the window.
        long low = Math.Max(0, tail - _limit);
        long high = tail;
        while (low < high)
        {
            long middle = low + ((high - low) / 2);
            if (stamp - Volatile.Read(ref state.Slots[middle % _limit].Stamp) < _window)
            {
                high = middle;
            }
            else
            {
                low = middle + 1;
            }
        }

        return _limit - (tail - low);
    }

    public long GetRetryAfter(ref LogState state, long now, long permits)
    {
        long tail = ReadTail(state, out long stamp, now);
        if (tail + permits - 1 < _limit)
        {
            return 0;
        }

        long oldestStamp = Volatile.Read(ref state.Slots[(tail + permits - 1) % _limit].Stamp);
        return stamp - oldestStamp < _window ? oldestStamp + _window - now : 0;
    }

    public long? GetFullSince(ref LogState state, long now)
    {
        long tail = ReadTail(state, out long stamp, now);
        if (tail == 0)
        {
            return 0;
        }

        long newest = Volatile.Read(ref state.Slots[(tail - 1) % _limit].Stamp);
        return stamp - newest >= _window ? newest + _window : null;
    }

    /// <summary>The tail and the time a decision would use, for read-only views.</summary>
    private long ReadTail(LogState state, out long stamp, long now)
    {
        long tail = Volatile.Read(ref state.Tail);
        if (tail < 0)
        {
            tail = ~tail; // a refund is in progress: read the ring as it was
        }

        stamp = tail == 0 ? now : Math.Max(now, Volatile.Read(ref state.Slots[(tail - 1) % _limit].Stamp));
        return tail;
    }
}

/// <summary>Per-limiter (or per-key) state of <see cref="SlidingWindowLog"/>: the ring and its tail.</summary>
internal sealed class LogState
{
    /// <summary>The next ticket; negative (~tail) while a refund restores the ring.</summary>
    public long Tail;

    public readonly LogSlot[] Slots;

    public LogState(int limit)
    {
        Slots = new LogSlot[limit];
        for (int i = 0; i < Slots.Length; i++)
        {
            Slots[i] = new LogSlot { Sequence = i - limit, Stamp = SlidingWindowLog.NeverStamp, Previous = SlidingWindowLog.NeverStamp };
        }
    }
}

/// <summary>One ring entry.</summary>
internal struct LogSlot
{
    /// <summary>The ticket whose stamp this is; written last (release), so a reader that sees it sees the stamp.</summary>
    public long Sequence;

    /// <summary>The admission's decision time.</summary>
    public long Stamp;

    /// <summary>The stamp this slot held before, so that an exact refund can put it back.</summary>
    public long Previous;
}
