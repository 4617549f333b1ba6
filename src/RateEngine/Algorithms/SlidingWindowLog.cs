using System.Diagnostics;

namespace RateEngine.Algorithms;

/// <summary>
/// The exact sliding window: a ring of the last <c>PermitLimit</c> admitted permits' timestamps. A request for n permits
/// at t is admitted exactly when the window (t - W, t] holds at most L - n permits.
/// </summary>
/// <remarks>
/// <para><b>Tickets</b>: every admitted permit takes the next ticket k (the tail moves by n in one CAS); ticket k lives in
/// slot k mod L, the slot ticket k - L used before it. Tickets count modulo M, the largest multiple of L below 2^44, so
/// they wrap without breaking the slot mapping; the tail word also carries a refund generation (below).</para>
/// <para><b>Invariant</b>: stamps are non-decreasing in ticket order, and at the CAS that takes ticket k every ticket
/// before k is published (its stamp written, then its sequence set to k with a release write). Then tickets k+n-1-L and
/// older are all at or before the stamp of k+n-1-L, so "that one stamp is outside the window" means "the window holds at
/// most L - n", which is the whole decision: O(1), exact in both directions.</para>
/// <para><b>Ring reuse</b> (a trap in src/DESIGN.md): ticket k + L reads the slot that ticket k writes. A taker therefore
/// waits until its predecessor (ticket T - 1) is published before deciding; by induction every older ticket is then
/// published too, so no decision ever reads a stale slot. The wait covers the stores between a winner's CAS and its
/// publish. Strictly, that makes the log obstruction-prone rather than lock-free: a winner preempted in that gap makes
/// the others spin (SpinWait, which yields) until it runs again; no one ever waits on another's decision.</para>
/// <para><b>Monotone stamps</b>: a taker decides at max(its clock read, its predecessor's stamp). That keeps stamps ordered
/// when threads read the clock in one order and win the CAS in another, and it clamps a clock that went backwards.
/// The stamp lies between the taker's clock read and its CAS.</para>
/// <para><b>Linearization point</b>: the CAS of the tail.</para>
/// <para><b>Refund</b> is exact when no ticket was taken since: the tail is locked (its sign bit set), the overwritten
/// slots get their previous stamps back, and the tail is put back with its generation bumped, so that a taker who read
/// the tail before the refund cannot win a CAS against the same ticket number after it (ABA). Once someone took a later
/// ticket, or a slot's previous stamp was already used by an earlier refund, the permits stay counted until they leave
/// the window: freeing a slot in the middle of the ring would break the ordering the decision relies on. The generation
/// has 19 bits: a taker would have to stall across 2^19 refunds for it to repeat. Each admission may be refunded once.</para>
/// </remarks>
internal readonly struct SlidingWindowLog : IRateAlgorithm<LogState>
{
    /// <summary>The stamp of a slot no ticket has used: expired at any time, with room to subtract a window.</summary>
    internal const long NeverStamp = long.MinValue / 4;

    /// <summary>A slot's previous stamp after a refund used it: a second refund cannot restore the slot exactly.</summary>
    internal const long UnknownStamp = long.MaxValue;

    private const int TicketBits = 44;
    private const long TicketMask = (1L << TicketBits) - 1;
    private const long GenerationUnit = 1L << TicketBits;
    private const long GenerationMask = ~TicketMask & long.MaxValue;
    private const long Locked = long.MinValue;

    private readonly int _limit;
    private readonly long _window;
    private readonly long _modulus;

    /// <param name="permitLimit">L.</param>
    /// <param name="windowTicks">W in clock ticks.</param>
    /// <param name="ticketBits">Tickets count modulo the largest multiple of L below 2^ticketBits (tests shrink it to wrap often).</param>
    public SlidingWindowLog(int permitLimit, long windowTicks, int ticketBits = TicketBits)
    {
        Debug.Assert(permitLimit > 0 && windowTicks > 0);
        Debug.Assert(ticketBits <= TicketBits && (1L << ticketBits) >= 2L * permitLimit);
        _limit = permitLimit;
        _window = windowTicks;
        _modulus = (1L << ticketBits) / permitLimit * permitLimit;
    }

    public long PermitLimit => _limit;

    public long RefillTicks => _window;

    public long RefundHorizon => long.MaxValue;

    public LogState CreateState() => new(_limit, _modulus);

    /// <summary>Slots that were never stamped read as free at any time.</summary>
    public LogState CreateState(long now) => CreateState();

    public bool TryAcquire(ref LogState state, long now, long permitCount, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permitCount > 0 && permitCount <= _limit);
        int permits = (int)permitCount; // at most the limit, itself an int: a slot per permit
        LogSlot[] slots = state.Slots;
        SpinWait spin = default;
        while (true)
        {
            long word = Volatile.Read(ref state.Tail);
            if (word < 0)
            {
                spin.SpinOnce(); // a refund holds the tail while it restores slots
                continue;
            }

            long tail = word & TicketMask;
            int next = (int)(tail % _limit);
            int last = next == 0 ? _limit - 1 : next - 1;
            ref LogSlot predecessor = ref slots[last];
            if (Volatile.Read(ref predecessor.Sequence) != Advance(tail, _modulus - 1))
            {
                spin.SpinOnce(); // the predecessor won its CAS but has not published its stamp yet
                continue;
            }

            long stamp = Math.Max(now, predecessor.Stamp);

            // The newest ticket that must be out of the window is tail + permits - 1 - L, in slot (tail + permits - 1) mod L.
            int oldest = next + permits - 1;
            if (oldest >= _limit)
            {
                oldest -= _limit;
            }

            long oldestStamp = Volatile.Read(ref slots[oldest].Stamp);
            if (stamp - oldestStamp < _window)
            {
                if (Volatile.Read(ref state.Tail) != word)
                {
                    continue; // the ring moved while we read it: decide again on a consistent view
                }

                admission = default;
                retryAfter = oldestStamp + _window - now;
                return false;
            }

            // Linearization point. The generation bits stay as they are; only a refund changes them.
            long taken = (word & GenerationMask) | Advance(tail, permits);
            if (Interlocked.CompareExchange(ref state.Tail, taken, word) != word)
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
                Volatile.Write(ref slot.Sequence, Advance(tail, i));
                index = index + 1 == _limit ? 0 : index + 1;
            }

            admission = new Admission(stamp, permits, taken, word);
            retryAfter = 0;
            return true;
        }
    }

    public bool Refund(ref LogState state, in Admission admission)
    {
        long taken = admission.Marker;

        // Lock the tail only if nobody took a ticket after ours; otherwise keep the permits counted (see remarks).
        if (Interlocked.CompareExchange(ref state.Tail, taken | Locked, taken) != taken)
        {
            return false;
        }

        // Every ticket before ours is published and no one can take one now, so the slots are ours to restore.
        LogSlot[] slots = state.Slots;
        long first = admission.Previous & TicketMask;
        int start = (int)(first % _limit);
        for (int i = 0, index = start; i < admission.Permits; i++, index = index + 1 == _limit ? 0 : index + 1)
        {
            if (slots[index].Previous == UnknownStamp)
            {
                Volatile.Write(ref state.Tail, taken);
                return false;
            }
        }

        for (int i = 0, index = start; i < admission.Permits; i++, index = index + 1 == _limit ? 0 : index + 1)
        {
            ref LogSlot slot = ref slots[index];
            slot.Stamp = slot.Previous;
            slot.Previous = UnknownStamp;
            slot.Sequence = Advance(first, i + _modulus - _limit);
        }

        Volatile.Write(ref state.Tail, ((taken + GenerationUnit) & GenerationMask) | first);
        return true;
    }

    public long GetAvailablePermits(ref LogState state, long now)
    {
        int next = ReadTail(state, now, out long stamp, out _);

        // Stamps rise from the oldest slot (next) to the newest (next - 1): binary-search the first one inside the window.
        int low = 0;
        int high = _limit;
        while (low < high)
        {
            int middle = low + ((high - low) / 2);
            if (stamp - Volatile.Read(ref state.Slots[(next + middle) % _limit].Stamp) < _window)
            {
                high = middle;
            }
            else
            {
                low = middle + 1;
            }
        }

        return low;
    }

    public long GetRetryAfter(ref LogState state, long now, long permits)
    {
        while (true)
        {
            int next = ReadTail(state, now, out long stamp, out long word);
            long oldestStamp = Volatile.Read(ref state.Slots[(next + permits - 1) % _limit].Stamp);

            // As the reject path: a taker that won its CAS meanwhile may have written that slot, and its stamp (about a window
            // later than the ticket's it replaced) would arm the queue's wake-up up to a window late.
            if (Volatile.Read(ref state.Tail) == word)
            {
                return stamp - oldestStamp < _window ? oldestStamp + _window - now : 0;
            }
        }
    }

    /// <remarks>
    /// Not full while a refund holds the tail or the newest ticket is not yet published: the slot would still show the
    /// stamp of an older ticket. (Partition eviction relies on this: its re-check must see an admission in flight.)
    /// </remarks>
    public long? GetFullSince(ref LogState state, long now)
    {
        long word = Volatile.Read(ref state.Tail);
        long tail = word & TicketMask;
        int next = (int)(tail % _limit);
        ref LogSlot newestSlot = ref state.Slots[next == 0 ? _limit - 1 : next - 1];
        if (word < 0 || Volatile.Read(ref newestSlot.Sequence) != Advance(tail, _modulus - 1))
        {
            return null;
        }

        long newest = Volatile.Read(ref newestSlot.Stamp);

        // A refund is the one thing that makes a slot's stamp older, and it may have run whole between the reads above and
        // this one: read as the newest stamp, an older one (or none) would call a busy key idle, and an eviction would
        // forget its stamps in the window. A refund changes the tail word (it locks it, then bumps its generation).
        if (Volatile.Read(ref state.Tail) != word)
        {
            return null;
        }

        if (newest == NeverStamp)
        {
            return 0;
        }

        long stamp = Math.Max(now, newest);
        return stamp - newest >= _window ? newest + _window : null;
    }

    /// <summary>(ticket + delta) mod M, for 0 &lt;= delta &lt; M.</summary>
    private long Advance(long ticket, long delta)
    {
        long sum = ticket + delta;
        return sum >= _modulus ? sum - _modulus : sum;
    }

    /// <summary>For read-only views: the slot of the next ticket, and the time a decision would use.</summary>
    /// <remarks>
    /// Waits, as a taker does, for the newest ticket's publish: until then its slot shows an older ticket's stamp, and a
    /// full log would read as having room (a zero-permit probe admitted on it). Waits too while a refund holds the tail: it
    /// is restoring slots, and a ring half restored reads as neither state. (A refund that starts after this returns may
    /// still change the slots its caller reads next: a view is then of a moment, as any read-only view is.)
    /// </remarks>
    private int ReadTail(LogState state, long now, out long stamp, out long word)
    {
        SpinWait spin = default;
        while (true)
        {
            word = Volatile.Read(ref state.Tail);
            long tail = word & TicketMask;
            int next = (int)(tail % _limit);
            ref LogSlot newest = ref state.Slots[next == 0 ? _limit - 1 : next - 1];
            if (word < 0 || Volatile.Read(ref newest.Sequence) != Advance(tail, _modulus - 1))
            {
                spin.SpinOnce();
                continue;
            }

            stamp = Math.Max(now, Volatile.Read(ref newest.Stamp));
            return next;
        }
    }
}
