using System.Diagnostics;
using RateEngine.Algorithms;

namespace RateEngine.Limiters;

/// <summary>
/// One shared limiter whose permits are handed out from per-core blocks (<see cref="PerCoreReservationOptions"/>): a
/// thread takes from its core's block with one CAS on a cache line no other core writes, and only a block that is empty
/// or over goes to the shared state, for the request plus a block of further permits.
/// </summary>
/// <remarks>
/// <para><b>Block</b>: one word per stripe, <c>(epoch e, remaining r)</c> packed by <see cref="EpochCount"/>: r permits
/// that the shared state counted in period e (a fixed window, or a counter's segment) and that no request has used yet.
/// A permit from the block is used at a time stamped in e: max(now, start of e), which lies between the caller's clock
/// read and its CAS, as for the algorithm's own admissions. Once now is past e, the block is over and its permits are
/// never used.</para>
/// <para><b>Invariant</b>: for every period e, the permits used in e plus the blocks' remaining permits of e are at most
/// what the shared state counted in e, which its own invariant keeps within the limit. A block only grows by permits
/// the shared state has just counted in its period (or by a refund of permits taken from it), and a stripe never goes
/// back to an older period, so the guarantee of the algorithm holds for the permits' use times (for the log, the guarantee
/// of window W, which its counted span of W plus two periods buys: see <see cref="BlockPeriodLog"/>).</para>
/// <para><b>Linearization point</b>: the stripe's CAS for a permit from a block; the shared state's CAS for a refill.</para>
/// <para><b>What it costs</b>: a refused request that found its own block short looks at every other block before
/// refusing, so a cap is refused only when no block holds the request's permits (a weighted request whose permits are
/// scattered over blocks is refused). A counter's block left unused when its segment ends stays counted for the window,
/// like any permit of that segment: about <c>stripes * MaxBlockSize</c> permits a segment, and near the cap a block
/// takes at most <c>1 / (2 * stripes)</c> of what is left, so the permits held back shrink to the request itself.</para>
/// </remarks>
internal sealed class StripedHost<TAlgorithm, TState> : PerCoreHost
    where TAlgorithm : struct, IPeriodBlockAlgorithm<TState>
{
    private readonly TAlgorithm _algorithm;
    private readonly StateCell<TState> _cell;
    private readonly long _period;
    private readonly long _maxFastEpoch;

    /// <summary>2^31 periods (saturated): blocks are trusted only while the last sweep is less than this long ago.</summary>
    private readonly long _sweepGuard;

    /// <summary>
    /// When every block was last known to hold a period less than 2^31 periods old (see <see cref="ResetBlocksOver"/>).
    /// Written about once per 2^30 periods, so the line stays shared.
    /// </summary>
    private long _sweptAt;

    public StripedHost(TAlgorithm algorithm, PerCoreReservationOptions options)
        : this(algorithm, options, OwnedStateCell<TState>.Create(algorithm.CreateState()))
    {
    }

    /// <summary>
    /// Blocks over a shared state that lives elsewhere: a partition key's entry, promoted once it is hot. Every permit the
    /// state counted before is as it would be without blocks, and the blocks start empty.
    /// </summary>
    public StripedHost(TAlgorithm algorithm, PerCoreReservationOptions options, StateCell<TState> cell)
        : base(options)
    {
        _algorithm = algorithm;
        _cell = cell;
        _period = algorithm.PeriodTicks;
        _maxFastEpoch = long.MaxValue / _period - 1;
        _sweepGuard = _period > (long.MaxValue >> 31) ? long.MaxValue : _period << 31;
    }

    /// <summary>
    /// The blocks of a key promoted at <paramref name="now"/> start empty in now's period, swept as of now (before the host is
    /// published, so no core refills meanwhile). Left at the clock's zero, the first refills of a limiter 2^31 periods old
    /// would each see a sweep due and could empty a block another core had just filled (its permits counted, then unused
    /// for the period); and blocks reading as period 0 while the sweep clock said fresh would read as a period ahead near
    /// the epochs' wrap, where no block could be installed.
    /// </summary>
    public override void StartAt(long now) => EmptyAllBlocks(now);

    public override long PermitLimit => _algorithm.PermitLimit;

    public override long RefillTicks => _algorithm.RefillTicks;

    public override bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter)
    {
        int home = Home();
        if (TryTake(home, now, permits, out admission))
        {
            retryAfter = 0;
            return true;
        }

        return Refill(home, now, permits, out admission, out retryAfter);
    }

    /// <summary>
    /// Gives the permits back to the block they came from while their period lasts (now, a fresh read, is not past it) and
    /// the shared state still counts it. A permit of a period that is over is worth nothing, and installing one could make
    /// a block of a period long gone read as current through its alias (epochs compare modulo 2^33).
    /// </summary>
    public override bool Refund(in Admission admission, long now) =>
        now / _period <= admission.Marker
        && _algorithm.CountsPeriod(ref _cell.State, admission.Marker)
        && Install(ref Stripes[(int)admission.Previous].Word, admission.Marker, admission.Permits);

    /// <remarks>
    /// The blocks are read before the shared state: permits only ever move from the shared state into a block, so a refill
    /// between the two reads is then counted in neither (a moment's understatement), never in both.
    /// </remarks>
    public override long GetAvailablePermits(long now)
    {
        long held = HeldInBlocks(now, out _);
        return Math.Min(_algorithm.PermitLimit, held + _algorithm.GetAvailablePermits(ref _cell.State, now));
    }

    public override long GetRetryAfter(long now, long permits)
    {
        long shared = _algorithm.GetRetryAfter(ref _cell.State, now, permits);
        if (shared == 0)
        {
            return 0;
        }

        HeldInBlocks(now, out long largest);
        return largest >= permits ? 0 : shared;
    }

    /// <summary>The shared state's: a block's permits were counted there, so it is not fresh while a block could hold any.</summary>
    public override long? GetFullSince(long now) => _algorithm.GetFullSince(ref _cell.State, now);

    /// <summary>Takes <paramref name="permits"/> from stripe <paramref name="index"/>'s block if it holds them for now's period.</summary>
    private bool TryTake(int index, long now, long permits, out Admission admission)
    {
        ref long word = ref Stripes[index].Word;
        while (true)
        {
            long current = Volatile.Read(ref word);
            long remaining = EpochCount.Count(current);
            if (remaining < permits || !BlockPeriod(current, now, out long epoch) || SweepDue(now))
            {
                admission = default;
                return false;
            }

            // Linearization point: the block still holds this period and these permits.
            if (Interlocked.CompareExchange(ref word, EpochCount.Pack(epoch, remaining - permits), current) == current)
            {
                admission = new Admission(Math.Max(now, epoch * _period), permits, epoch, index);
                return true;
            }
        }
    }

    /// <summary>
    /// The home block could not serve: take the request plus a block from the shared state, sized by what the stripe used
    /// of its last block and by what is left of the cap; failing that, take the request from any other core's block.
    /// </summary>
    private bool Refill(int home, long now, long permits, out Admission admission, out long retryAfter)
    {
        ref BlockStripe stripe = ref Stripes[home];
        if (SweepDue(now))
        {
            EmptyAllBlocks(now);
        }

        long block = Volatile.Read(ref stripe.Word);
        bool over = !BlockPeriod(block, now, out _);
        long period = (now / _period) + 1; // as the stripe notes periods: 0 is none
        bool again = stripe.RefilledIn == period;
        long next = NextExtra(ref stripe, again, over, left: EpochCount.Count(block));
        if (over && !again)
        {
            ResetBlocksOver(home, now); // the core's first refill in this period sweeps; a block of none stays over
        }

        // Enough to size the block: up to the point where the cap's share (1 / (2 * stripes) of what is left) stops binding.
        long available = _algorithm.GetAvailableUpTo(ref _cell.State, now, permits + (next * 2L * Stripes.Length));
        long extra = available > permits ? Math.Min(next, (available - permits) / (2L * Stripes.Length)) : 0;
        extra = Math.Max(0, Math.Min(extra, _algorithm.PermitLimit - permits));

        if (_algorithm.TryAcquire(ref _cell.State, now, permits + extra, out Admission taken, out retryAfter)
            || (extra > 0 && _algorithm.TryAcquire(ref _cell.State, now, permits + (extra = 0), out taken, out retryAfter)))
        {
            // The next block is sized from what this one really holds, not from what the core wished for.
            stripe.LastExtra = extra > 0 && Install(ref stripe.Word, taken.Marker, extra) ? extra : 0;
            stripe.RanOutIn = again ? period : stripe.RanOutIn;
            stripe.RefilledIn = period;
            admission = taken with { Permits = permits, Previous = home };
            return true;
        }

        // The shared state is out: permits may still sit in a block, this core's too if another thread just refilled it.
        for (int i = 0; i < Stripes.Length; i++)
        {
            if (TryTake(After(home, i), now, permits, out admission))
            {
                retryAfter = 0;
                return true;
            }
        }

        admission = default;
        return false;
    }

    /// <summary>
    /// Empties every block whose period is over and that still holds permits into an empty block of now's period (an empty
    /// block is harmless in any period, and left alone it costs no cache line). Epochs are compared modulo 2^33
    /// (<see cref="EpochCount"/>), so a block left alone for 2^33 periods would read as current again, with permits of a
    /// period long gone: for the log, whose state has no epoch to alias with it, that would be permits no window counts.
    /// So a sweep notes when it ran (<see cref="_sweptAt"/>), and once 2^31 periods passed without one, no block is
    /// trusted: the next refill empties them all (<see cref="EmptyAllBlocks"/>). Every core's first refill in a period
    /// sweeps, so a busy limiter never gets there. (What stays open: a thread stopped for 2^33 periods between a refill's
    /// or refund's decision and its install; with the log's periods of W/256, that is 2^25 windows, 9 hours of 1 ms windows.)
    /// </summary>
    private void ResetBlocksOver(int home, long now)
    {
        long fresh = EpochCount.Pack(now / _period, 0);

        // Once in 2^30 periods the sweep resets empty blocks too, so no word ages past its alias range: an empty block left
        // alone that long would read as a period ahead, and its core could not install a block until now caught up.
        bool refreshing = now - Volatile.Read(ref _sweptAt) >= _sweepGuard / 2;
        if (refreshing)
        {
            // Every block this sweep leaves holds now's period or a newer one (a block being refilled holds a period at
            // most a slow thread's lag old): so it is, from here, until the next sweep.
            Volatile.Write(ref _sweptAt, now);
        }

        for (int i = 0; i < Stripes.Length; i++)
        {
            ref BlockStripe stripe = ref Stripes[i];
            long word = Volatile.Read(ref stripe.Word);

            // A failed CAS leaves the block to its own next refill or a later sweep: someone moved it meanwhile (a refill, or
            // a caller whose clock is still in that period taking or refunding).
            if ((refreshing || EpochCount.Count(word) > 0) && !BlockPeriod(word, now, out _)
                && Interlocked.CompareExchange(ref stripe.Word, fresh, word) == word && i != home)
            {
                // That core left permits over: its next refill halves its block, as it would have had it found them itself.
                stripe.SweptLeftover = 1;
            }
        }
    }

    /// <summary>
    /// Adds <paramref name="permits"/> counted in period <paramref name="epoch"/> to a block: merged with what the block
    /// holds of the same period, or replacing a block of an older period. Returns false, adding nothing, when the block
    /// holds a newer period: then <paramref name="epoch"/> is over and its permits are worth nothing.
    /// </summary>
    private static bool Install(ref long word, long epoch, long permits)
    {
        while (true)
        {
            long current = Volatile.Read(ref word);
            long distance = EpochCount.Distance(epoch, current);
            if (distance < 0)
            {
                return false;
            }

            long held = distance == 0 ? EpochCount.Count(current) : 0;
            if (Interlocked.CompareExchange(ref word, EpochCount.Pack(epoch, EpochCount.AddSaturating(held, permits)), current) == current)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// How many further permits the home stripe's next block takes, by what the core showed it needs: twice its last block
    /// (at least one) when it runs out again in the period of its last refill; twice its last block when that block, of a
    /// past period, was used up; half (down to none) when a period ended with permits left in it, whoever emptied it,
    /// unless the core had run out in that period too (a busy core's last block of a period is rarely used up: it keeps
    /// its size); none to start, so a core that sends one request a period never holds a permit back. Never more than
    /// <see cref="PerCoreReservationOptions.MaxBlockSize"/> - 1. (The stripe's fields are hints: a race on them only sizes
    /// a block differently.)
    /// </summary>
    private long NextExtra(ref BlockStripe stripe, bool again, bool over, long left)
    {
        long last = stripe.LastExtra;
        bool leftOver = (over && left > 0) || stripe.SweptLeftover != 0;
        stripe.SweptLeftover = 0;
        long next = again ? Math.Max(last * 2, 1) // ran out within the period (its block is empty, or none was kept)
            : leftOver ? (stripe.RanOutIn == stripe.RefilledIn ? last : last / 2) // a busy period's last block: keep its size
            : over ? last * 2 // the last block was used up in its period (none: stays none)
            : last; // the block reads as now's period without a refill of this core (a refund): nothing to learn

        return Math.Min(next, MaxExtra);
    }

    /// <summary>True when no sweep ran for 2^31 periods: a block's period might then read as one of its aliases.</summary>
    private bool SweepDue(long now) => now - Volatile.Read(ref _sweptAt) >= _sweepGuard;

    /// <summary>Empties every block into now's period, whatever period it reads as (<see cref="ResetBlocksOver"/>).</summary>
    private void EmptyAllBlocks(long now)
    {
        long fresh = EpochCount.Pack(now / _period, 0);
        foreach (ref BlockStripe stripe in Stripes.AsSpan())
        {
            Interlocked.Exchange(ref stripe.Word, fresh);
            stripe.LastExtra = 0;
            stripe.SweptLeftover = 0;
        }

        Volatile.Write(ref _sweptAt, now);
    }

    /// <summary>Permits in blocks usable at <paramref name="now"/>, and the most in any one block.</summary>
    private long HeldInBlocks(long now, out long largest)
    {
        long sum = 0;
        largest = 0;
        if (SweepDue(now))
        {
            return 0;
        }

        foreach (ref BlockStripe stripe in Stripes.AsSpan())
        {
            long word = Volatile.Read(ref stripe.Word);
            if (BlockPeriod(word, now, out _))
            {
                long remaining = EpochCount.Count(word);
                sum += remaining;
                largest = Math.Max(largest, remaining);
            }
        }

        return sum;
    }

    /// <summary>
    /// The period a permit of the block in <paramref name="word"/> would be used in at <paramref name="now"/>: the block's,
    /// unless now is past it (false). A caller whose clock read is behind the block's period (a slow thread, or a clock
    /// that went back) uses it in the block's period, as the algorithm itself decides in its word's.
    /// </summary>
    private bool BlockPeriod(long word, long now, out long epoch)
    {
        long nowEpoch = EpochCount.PeriodOf(now, word, _period, _maxFastEpoch);
        if (nowEpoch == EpochCount.StoredEpoch(word))
        {
            // The block's period still contains now (almost every take).
            epoch = nowEpoch;
            return true;
        }

        long distance = EpochCount.Distance(nowEpoch, word);
        epoch = nowEpoch - distance;
        Debug.Assert(distance > 0 || EpochCount.Holds(word, epoch));
        return distance <= 0;
    }
}
