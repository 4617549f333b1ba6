using System.Diagnostics;
using RateEngine.Timing;

namespace RateEngine.Algorithms;

/// <summary>
/// Segmented sliding window: the window of W ticks is cut into S segments of g = W / S ticks, and a request is
/// admitted when the permits counted in the current segment and the S segments before it leave room.
/// </summary>
/// <remarks>
/// <para><b>Guarantee</b>: never more than <c>PermitLimit</c> permits in any interval of length W. An admission at t in
/// segment e sees segments e-S..e, which cover [t - W, t] whole, so it counts every permit that any W-long interval
/// ending at t could contain. The price is conservatism: a permit taken in segment j is counted until segment j+S+1
/// begins, i.e. up to one segment longer than W.</para>
/// <para><b>State</b>: <see cref="CounterState.Current"/> packs (current segment e, its count) into one word, so the
/// decision for a segment is one CAS. Finished segments' counts live in <see cref="CounterState.History"/>, one slot per
/// segment modulo S+1, each packing (segment, count), made by the first rollover from a segment that counted anything
/// (a key touched within one segment never pays for it). <see cref="CounterState.HistorySum"/> caches (e, sum of e-S..e-1).</para>
/// <para><b>Rollover</b> (a trap in src/DESIGN.md): a thread that sees time in a later segment first records the word's
/// count in history with a larger-wins CAS, then CASes the word to the new segment. A slow thread still deciding in
/// the old segment fails its CAS, because the word moved, and decides again. A slow thread recording an old count can
/// never shrink history: larger wins within a segment, and a recorder that finds the word moved past its segment writes
/// nothing (whoever moved it recorded the final count first; a stall of over 2^20 segments would read a live slot as older).</para>
/// <para>Once the word holds segment e, every segment before e is finished, so the sum of e-S..e-1 is final but for refunds
/// and may be cached; it is published only after the CAS that made e current, and a refund into a slot sums it again.
/// Every slot and every cached sum stays at or above the permits admitted in it and not refunded.</para>
/// <para><b>Linearization point</b>: the CAS of <see cref="CounterState.Current"/>.</para>
/// <para><b>Refund</b> (whole or partial) subtracts from the word's count while the admission's segment is current, and
/// from the segment's history slot (then the cached sum) once it is over, while the word's window still counts it; never
/// below zero, and nothing once the segment has left that window. A rollover recorder that read the word before a refund
/// on it can put the larger count back (larger wins) while the word still holds the segment, or in the moment between its
/// check of the word and its write: those permits then stay counted until they expire, stricter, never looser.</para>
/// <para><b>Charge</b> counts an overrun in the current segment whatever the limit (a rollover first, as for an
/// admission). A segment's count saturates at <see cref="EpochCount.MaxCount"/> (2^31 - 1), and the charge's admission
/// reports the part that was counted. Counts above the limit are summed in <c>long</c>; the cached history sum saturates
/// at the same bound, which every decision reads as "full" (the limit is at most 2^31 - 1), and a saturated cache is
/// summed again from the slots, so a refusal's RetryAfter is computed from the true counts.</para>
/// </remarks>
internal readonly struct SlidingWindowCounter : IWeightedAlgorithm<CounterState>, IPeriodBlockAlgorithm<CounterState>
{
    private readonly long _limit;
    private readonly long _segment;
    private readonly int _segments;
    private readonly long _maxFastEpoch;
    private readonly LimiterClock? _clock;

    /// <param name="permitLimit">Permits per window.</param>
    /// <param name="segmentTicks">A segment in clock ticks.</param>
    /// <param name="segmentsPerWindow">Segments per window.</param>
    /// <param name="clock">The clock <c>now</c> comes from, read again for an ambiguous distance (see <see cref="Fresher"/>); null only in tests.</param>
    public SlidingWindowCounter(long permitLimit, long segmentTicks, int segmentsPerWindow, LimiterClock? clock = null)
    {
        Debug.Assert(permitLimit is > 0 and <= int.MaxValue);
        Debug.Assert(segmentTicks > 0 && segmentsPerWindow > 0);
        _limit = permitLimit;
        _segment = segmentTicks;
        _segments = segmentsPerWindow;
        _maxFastEpoch = long.MaxValue / segmentTicks - 1;
        _clock = clock;
    }

    public long PermitLimit => _limit;

    /// <summary>
    /// A distance of 2^32 segments or more reads two ways: a key idle that long, or a clock read more than
    /// <see cref="EpochCount.MaxLag"/> segments older than the word (a thread stalled between its clock read and now), which
    /// taken as a later segment would roll the word back to a segment that is over and admit there. So the clock is read
    /// again, after the word: true, with <paramref name="now"/> moved to that later time, when it is later.
    /// </summary>
    private bool Fresher(ref long now)
    {
        if (_clock is { } clock && clock.Now() is var fresh && fresh > now)
        {
            now = fresh;
            return true;
        }

        return false;
    }

    /// <summary>A permit taken in segment j is back when segment j + S + 1 begins.</summary>
    public long RefillTicks => (long)Int128.Min((Int128)_segment * (_segments + 1), TimeMath.MaxTicks);

    public long RefundHorizon => RefillTicks;

    /// <summary>A permit is counted in its segment: a block's permits may be used while that segment lasts.</summary>
    public long PeriodTicks => _segment;

    public bool CountsPeriod(ref CounterState state, long epoch) => EpochCount.Holds(Volatile.Read(ref state.Current), epoch);

    public long GetAvailableUpTo(ref CounterState state, long now, long enough) => Math.Min(GetAvailablePermits(ref state, now), enough);

    public CounterState CreateState() => new();

    /// <inheritdoc/>
    /// <remarks>
    /// The cached history sum starts as that segment's too (a new key has none): left at zero, it would name segment 0,
    /// which a key made in the 2^20 segments before the epochs wrap reads as ahead, so no rollover could replace it, and
    /// which segment 2^33 reads as its own: an empty history for that whole segment.
    /// </remarks>
    public CounterState CreateState(long now)
    {
        long epoch = now / _segment;
        return new() { Current = EpochCount.Pack(epoch, 0), HistorySum = EpochCount.Pack(epoch, 0) };
    }

    public bool TryAcquire(ref CounterState state, long now, long permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        while (true)
        {
            long word = Volatile.Read(ref state.Current);
            long nowEpoch = EpochCount.PeriodOf(now, word, _segment, _maxFastEpoch);
            long distance = EpochCount.Distance(nowEpoch, word);
            if (distance > 0 && Fresher(ref now)) // a later segment, or a stalled read wrapped to one: see FixedWindow.CurrentEpoch
            {
                nowEpoch = now / _segment;
                distance = EpochCount.Distance(nowEpoch, word);
            }

            if (distance <= 0)
            {
                // Same segment (or now is behind it: a slow caller or a clock that went back; decide in the word's segment).
                long epoch = nowEpoch - distance;
                long used = EpochCount.Count(word);
                long history = HistorySum(ref state, epoch);
                if (history + used + permits > _limit)
                {
                    admission = default;
                    retryAfter = RetryAfter(ref state, epoch, used + permits, now, pendingWord: -1);
                    return false;
                }

                // Linearization point: the word still holds this segment and this count.
                if (Interlocked.CompareExchange(ref state.Current, EpochCount.Pack(epoch, used + permits), word) == word)
                {
                    admission = new Admission(Math.Max(now, epoch * _segment), permits, epoch, word);
                    retryAfter = 0;
                    return true;
                }

                continue;
            }

            // Rollover: the word's segment is over. Its count must be in history before any decision in a later segment.
            // (A finished epoch below zero can only come from a word idle across the epoch wrap: nothing to record. One
            // that counts in no window from now on is still recorded: it is the newest use GetFullSince reports if this
            // request is refunded.)
            long finished = nowEpoch - distance;
            if (finished >= 0)
            {
                Record(ref state, finished, EpochCount.Count(word));
            }

            long sum = SumHistory(ref state, nowEpoch, skipEpoch: -1);
            bool admit = sum + permits <= _limit;
            if (Interlocked.CompareExchange(ref state.Current, EpochCount.Pack(nowEpoch, admit ? permits : 0), word) != word)
            {
                continue;
            }

            // nowEpoch is current, so segments before it are final: their sum can be shared, summed again after the CAS so
            // that a refund into a slot since the sum above is in it (see RefundFinished).
            Publish(ref state, nowEpoch, SumHistory(ref state, nowEpoch, skipEpoch: -1));
            if (admit)
            {
                admission = new Admission(now, permits, nowEpoch, word);
                retryAfter = 0;
                return true;
            }

            admission = default;
            retryAfter = RetryAfter(ref state, nowEpoch, permits, now, pendingWord: -1);
            return false;
        }
    }

    public bool Refund(ref CounterState state, in Admission admission) => Refund(ref state, admission.Marker, admission.Permits);

    public bool Refund(ref CounterState state, in Admission admission, long amount)
    {
        Debug.Assert(amount > 0 && amount <= admission.Permits);
        return Refund(ref state, admission.Marker, amount);
    }

    public Admission Charge(ref CounterState state, long now, long amount)
    {
        Debug.Assert(amount > 0);
        long nowEpoch = now / _segment;
        while (true)
        {
            long word = Volatile.Read(ref state.Current);
            long distance = EpochCount.Distance(nowEpoch, word);
            if (distance > 0 && Fresher(ref now)) // a later segment, or a stalled read wrapped to one: see FixedWindow.CurrentEpoch
            {
                nowEpoch = now / _segment;
                distance = EpochCount.Distance(nowEpoch, word);
            }

            if (distance <= 0)
            {
                long epoch = nowEpoch - distance;
                long used = EpochCount.Count(word);
                long counted = EpochCount.AddSaturating(used, amount);
                if (Interlocked.CompareExchange(ref state.Current, EpochCount.Pack(epoch, counted), word) == word)
                {
                    return new Admission(Math.Max(now, epoch * _segment), counted - used, epoch, word);
                }

                continue;
            }

            // Rollover, exactly as for an admission: the finished count goes to history before the word moves on.
            long finished = nowEpoch - distance;
            if (finished >= 0)
            {
                Record(ref state, finished, EpochCount.Count(word));
            }

            long charged = EpochCount.AddSaturating(0, amount);
            if (Interlocked.CompareExchange(ref state.Current, EpochCount.Pack(nowEpoch, charged), word) == word)
            {
                Publish(ref state, nowEpoch, SumHistory(ref state, nowEpoch, skipEpoch: -1));
                return new Admission(now, charged, nowEpoch, word);
            }
        }
    }

    /// <summary>What a decision at <paramref name="now"/> counts: the current segment and the S before it.</summary>
    public long GetUsed(ref CounterState state, long now)
    {
        Snapshot(ref state, now, out long used, out long history, out _);
        return used + history;
    }

    /// <summary>Ticks until the newest segment that counts anything at <paramref name="now"/> has expired; 0 when none does.</summary>
    public long GetResetAfter(ref CounterState state, long now)
    {
        long epoch = Snapshot(ref state, now, out long used, out long history, out long pendingWord);
        if (used + history == 0)
        {
            return 0;
        }

        long newest = -1;
        if (used > 0)
        {
            newest = epoch;
        }
        else if (pendingWord != -1 && EpochCount.Count(pendingWord) > 0)
        {
            newest = epoch - EpochCount.Distance(epoch, pendingWord);
        }
        else if (Volatile.Read(ref state.History) is { } slots)
        {
            for (long j = epoch - 1; j >= Math.Max(0, epoch - _segments); j--)
            {
                long slot = Volatile.Read(ref slots[j % slots.Length]);
                if (EpochCount.Holds(slot, j) && EpochCount.Count(slot) > 0)
                {
                    newest = j;
                    break;
                }
            }
        }

        // A count between the snapshot's reads can move the newest segment; the answer stays within the window.
        return newest < 0 ? 0 : Math.Max(1, (newest + _segments + 1) * _segment - now);
    }

    /// <summary>
    /// Subtracts <paramref name="amount"/> from segment <paramref name="epoch"/>: from the word while the segment is
    /// current, and from its history slot once it is over, while the window of the word's segment still counts it.
    /// </summary>
    private bool Refund(ref CounterState state, long epoch, long amount)
    {
        while (true)
        {
            long word = Volatile.Read(ref state.Current);
            if (!EpochCount.Holds(word, epoch))
            {
                return RefundFinished(ref state, word, epoch, amount);
            }

            long used = EpochCount.Count(word);
            if (used < amount)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref state.Current, EpochCount.Pack(epoch, used - amount), word) == word)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// The refund of a segment the word has moved past (it never comes back). Its final count went into its history slot
    /// before the word moved, so the slot holds at least the permits being refunded. A recorder that read the word before
    /// the last refund on it may still put a larger count back (larger wins) in the moment between its check that the word
    /// still holds the segment and its write: then the permits stay counted until they
    /// expire, stricter, never looser, since every slot and every cached sum stays at or above what was admitted and not
    /// refunded. Nothing when the word is already past segment epoch+S: the permits no longer count. Once the slot's CAS
    /// has taken them off, the refund is reported even if the word moves past meanwhile, since a decision may have used them.
    /// </summary>
    private bool RefundFinished(ref CounterState state, long word, long epoch, long amount)
    {
        long wordAhead = -EpochCount.Distance(epoch, word);
        if (wordAhead <= 0 || wordAhead > _segments || Volatile.Read(ref state.History) is not { } slots)
        {
            return false;
        }

        ref long slot = ref slots[epoch % slots.Length];
        while (true)
        {
            long existing = Volatile.Read(ref slot);
            if (!EpochCount.Holds(existing, epoch) || EpochCount.Count(existing) < amount)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref slot, EpochCount.Pack(epoch, EpochCount.Count(existing) - amount), existing) == existing)
            {
                break;
            }
        }

        // The word's window may have cached its sum before the slot changed, or a rollover may be about to publish one it
        // summed before: sum that window again, read after the slot (so a publish still on its way finds it newer and
        // keeps it, and a later one reads the slot as it is now).
        while (true)
        {
            long cached = Volatile.Read(ref state.HistorySum);
            long wordEpoch = epoch - EpochCount.Distance(epoch, Volatile.Read(ref state.Current));
            if (wordEpoch > epoch + _segments)
            {
                // The segment left the window meanwhile, so no cached sum needs it; but the refund took effect at the slot's
                // CAS, and a decision since may have used the permits: it is reported, or the caller would count them still.
                return true;
            }

            long window = Math.Max(wordEpoch, epoch - EpochCount.Distance(epoch, cached));
            long packed = EpochCount.Pack(window, Math.Min(SumHistory(ref state, window, skipEpoch: -1), EpochCount.MaxCount));
            if (packed == cached || Interlocked.CompareExchange(ref state.HistorySum, packed, cached) == cached)
            {
                return true;
            }
        }
    }

    public long GetAvailablePermits(ref CounterState state, long now)
    {
        Snapshot(ref state, now, out long used, out long history, out _);
        return Math.Max(0, _limit - history - used);
    }

    public long GetRetryAfter(ref CounterState state, long now, long permits)
    {
        long epoch = Snapshot(ref state, now, out long used, out long history, out long pendingWord);
        long shortfall = history + used + permits - _limit;
        return shortfall <= 0 ? 0 : RetryAfter(ref state, epoch, used + permits, now, pendingWord);
    }

    public long? GetFullSince(ref CounterState state, long now)
    {
        Snapshot(ref state, now, out long used, out long history, out _);
        if (used + history > 0)
        {
            return null;
        }

        // The newest segment that counted anything: its permits came back S+1 segments after it began.
        long word = Volatile.Read(ref state.Current);
        long nowEpoch = now / _segment;
        long newest = EpochCount.Count(word) > 0 ? nowEpoch - EpochCount.Distance(nowEpoch, word) : -1;
        foreach (long slot in Volatile.Read(ref state.History) ?? [])
        {
            if (EpochCount.Count(slot) > 0)
            {
                newest = Math.Max(newest, nowEpoch - EpochCount.Distance(nowEpoch, slot));
            }
        }

        return newest < 0 ? 0 : (newest + _segments + 1) * _segment;
    }

    /// <summary>
    /// A read-only view for statistics and probes: the segment a decision at <paramref name="now"/> would use, its
    /// count, and the sum of the S segments before it, including a finished word not yet moved into history
    /// (returned as <paramref name="pendingWord"/>, or -1).
    /// </summary>
    private long Snapshot(ref CounterState state, long now, out long used, out long history, out long pendingWord)
    {
        long nowEpoch = now / _segment;
        long word = Volatile.Read(ref state.Current);
        long distance = EpochCount.Distance(nowEpoch, word);
        if (distance <= 0)
        {
            long epoch = nowEpoch - distance;
            used = EpochCount.Count(word);
            history = SumHistory(ref state, epoch, skipEpoch: -1);
            pendingWord = -1;
            return epoch;
        }

        long finished = nowEpoch - distance;
        used = 0;
        history = SumHistory(ref state, nowEpoch, skipEpoch: finished);
        pendingWord = -1;
        if (distance <= _segments)
        {
            // At the larger of the word's count and what its slot may already hold: the rollover that records it keeps the
            // larger, and the next segments sum the slots.
            long count = EpochCount.Count(word);
            if (finished >= 0 && Volatile.Read(ref state.History) is { } slots
                && Volatile.Read(ref slots[finished % slots.Length]) is var slot && EpochCount.Holds(slot, finished))
            {
                count = Math.Max(count, EpochCount.Count(slot));
            }

            history += count;
            pendingWord = EpochCount.Pack(finished, count);
        }

        return nowEpoch;
    }

    /// <summary>
    /// The sum of segments epoch-S..epoch-1, from the cache when it holds that segment, unless the cache saturated
    /// (overrun charges): then from the slots.
    /// </summary>
    private long HistorySum(ref CounterState state, long epoch)
    {
        long cached = Volatile.Read(ref state.HistorySum);
        if (EpochCount.Holds(cached, epoch) && EpochCount.Count(cached) != EpochCount.MaxCount)
        {
            return EpochCount.Count(cached);
        }

        long sum = SumHistory(ref state, epoch, skipEpoch: -1);
        Publish(ref state, epoch, sum);
        return sum;
    }

    private long SumHistory(ref CounterState state, long epoch, long skipEpoch)
    {
        // Read after the word (every caller has read it): a word past a segment that counted anything was written after
        // the history that holds it, so a null history here has nothing in it for this window.
        long[]? slots = Volatile.Read(ref state.History);
        if (slots is null)
        {
            return 0;
        }

        long sum = 0;
        for (long j = Math.Max(0, epoch - _segments); j < epoch; j++)
        {
            long slot = Volatile.Read(ref slots[j % slots.Length]);
            if (j != skipEpoch && EpochCount.Holds(slot, j))
            {
                sum += EpochCount.Count(slot);
            }
        }

        return sum;
    }

    /// <summary>
    /// Larger-wins: a newer segment beats an older one in the slot; within a segment the larger count wins.
    /// An empty segment is not written: a slot holding an older segment already reads as zero for this one, and keeping
    /// it preserves the newest segment that counted anything (what <see cref="GetFullSince"/> needs). So a slot with no
    /// count was never written (or refunds took its segment's count to zero) and counts nothing: any segment takes it. A
    /// never-written slot's zero word names segment 0, which a segment in the 2^20 before the epochs wrap (every 2^33
    /// segments) would read as newer, and its count would be lost. So would a slot last written 2^33 - k segments ago
    /// (k at most 2^20: a busy key whose other slots kept counting): while the word still holds the segment being
    /// recorded, no later segment has finished, so a slot that reads as newer is that old one, and it is overwritten. Once
    /// the word has moved past the segment, nothing is written (see the loop).
    /// </summary>
    private void Record(ref CounterState state, long epoch, long count)
    {
        if (count == 0)
        {
            return;
        }

        long[] slots = Volatile.Read(ref state.History) ?? MakeHistory(ref state);
        ref long slot = ref slots[epoch % slots.Length];
        long packed = EpochCount.Pack(epoch, count);
        while (true)
        {
            long existing = Volatile.Read(ref slot);

            // The word moved past this segment: whoever moved it recorded the segment's final count first (a rollover records
            // before its CAS), so this recorder is a stale one, and the slot may hold a live segment by now, which a stall of
            // over 2^20 segments makes read as older than this one (epochs compare modulo 2^33): it must not be written.
            if (!EpochCount.Holds(Volatile.Read(ref state.Current), epoch))
            {
                return;
            }

            long distance = EpochCount.Distance(epoch, existing);
            if (EpochCount.Count(existing) != 0 && distance == 0 && EpochCount.Count(existing) >= count)
            {
                return;
            }

            if (Interlocked.CompareExchange(ref slot, packed, existing) == existing)
            {
                return;
            }
        }
    }

    /// <summary>The key's first finished segment with a count: one array of S+1 slots, whoever makes it first.</summary>
    private long[] MakeHistory(ref CounterState state)
    {
        long[] made = FreshArray.WrittenThrough(new long[_segments + 1]); // read before written (Record's CAS)
        return Interlocked.CompareExchange(ref state.History, made, null) ?? made;
    }

    /// <summary>
    /// Caches the history sum of <paramref name="epoch"/> unless the cache already holds a newer segment. A sum above the
    /// count field (overrun charges) is cached saturated, which <see cref="HistorySum"/> reads as "sum the slots".
    /// </summary>
    private static void Publish(ref CounterState state, long epoch, long sum)
    {
        long packed = EpochCount.Pack(epoch, Math.Min(sum, EpochCount.MaxCount));
        while (true)
        {
            long existing = Volatile.Read(ref state.HistorySum);
            if (EpochCount.Distance(epoch, existing) <= 0)
            {
                return;
            }

            if (Interlocked.CompareExchange(ref state.HistorySum, packed, existing) == existing)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Ticks until a request refused in segment <paramref name="epoch"/> would pass, where <paramref name="needed"/> is the
    /// segment's own count plus the request's permits: each segment j of the window frees its count when segment j+S+1
    /// begins, the current segment's own permits last. <paramref name="pendingWord"/> is a finished segment still in the
    /// current word (or -1).
    /// </summary>
    /// <remarks>
    /// Judged on the slots alone, not on the cached sum the refusal used: the later segments' decisions sum the slots, and a
    /// slot may hold more than the cache (a recorder that read the word before a refund puts the larger count back). Walked
    /// against the cache's shortfall, such a slot freed permits the refusal never counted, and the answer came up to S
    /// segments short while the current segment's own permits still held the window (until a review of 2026-12-07).
    /// </remarks>
    private long RetryAfter(ref CounterState state, long epoch, long needed, long now, long pendingWord)
    {
        // From the newest segment back: once segments up to k have expired (at segment k+S+1), what is left is the count of
        // segments k+1..epoch-1 plus the current segment's. The answer is the earliest k where that fits.
        long[]? slots = Volatile.Read(ref state.History);
        long passesIn = epoch + _segments + 1; // the current segment's own permits gone too
        if (needed <= _limit)
        {
            passesIn = epoch + _segments;
            long left = 0;
            for (long j = epoch - 1; j >= Math.Max(0, epoch - _segments); j--)
            {
                // A finished segment still in the word counts what its slot may already hold, if more: the rollover that
                // records it keeps the larger count, and the next segments sum the slots.
                long slot = slots is null ? 0 : Volatile.Read(ref slots[j % slots.Length]);
                long count = EpochCount.Holds(slot, j) ? EpochCount.Count(slot) : 0;
                if (pendingWord != -1 && EpochCount.Holds(pendingWord, j))
                {
                    count = Math.Max(count, EpochCount.Count(pendingWord));
                }

                left += count;
                if (left + needed > _limit)
                {
                    break;
                }

                passesIn = j + _segments; // segments up to j - 1 expired
            }
        }

        // Not before the next segment: the refusal stands for this one (the slots may allow what the cache refused, and the
        // next segment's decision sums them).
        return Math.Max(1, Math.Max(passesIn, epoch + 1) * _segment - now);
    }
}
