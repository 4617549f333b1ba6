using System.Diagnostics;

namespace RateEngine.Algorithms;

/// <summary>
/// Fixed window: at most <c>PermitLimit</c> permits per aligned window [kW, (k+1)W).
/// </summary>
/// <remarks>
/// <para><b>State</b>: one word, <c>(epoch k, count c)</c> packed by <see cref="EpochCount"/>.</para>
/// <para><b>Invariant</b>: the word's count is the sum of permits admitted and charged with a stamp in window k, less
/// what was refunded in it. An admission leaves it at most <c>PermitLimit</c>; only an overrun <see cref="Charge"/> takes
/// it higher, by exactly its amount, up to <see cref="EpochCount.MaxCount"/> (2^31 - 1): a charge beyond that saturates,
/// and its admission reports the part that was counted. A count above the limit refuses every request until the window
/// ends. A window's count only ever lives in the word while the word holds that window, so no admission can land in a
/// window after the word has moved on.</para>
/// <para><b>Linearization point</b>: the CAS that installs <c>(k, c + n)</c>. It fails if another thread moved the
/// word (to a later window, or to a higher count), and the decision is taken again.</para>
/// <para>A caller whose clock read is behind the word's window (a slow thread, or a clock that went backwards)
/// decides in the word's window: its stamp is the start of that window, which lies between its clock read and its CAS.</para>
/// <para><b>Refund</b> (whole or partial) subtracts from the count while the word holds the admission's window; once the
/// word has moved on, the window's permits already came back and nothing is freed. It never takes the count below zero.
/// A whole refund with nobody admitted since restores the previous word exactly (the previous window's idle time too).</para>
/// </remarks>
internal readonly struct FixedWindow : IWeightedAlgorithm<long>, IPeriodBlockAlgorithm<long>, IPeriodic
{
    private readonly long _limit;
    private readonly long _window;
    private readonly long _maxFastEpoch;
    private readonly Timing.LimiterClock? _clock;

    /// <param name="permitLimit">Permits per window.</param>
    /// <param name="windowTicks">The window in clock ticks.</param>
    /// <param name="clock">
    /// The clock <c>now</c> comes from: read again when a decision's clock read looks more than <see cref="EpochCount.MaxLag"/>
    /// windows older than the word (see <see cref="CurrentEpoch(long, ref long, out long)"/>); null only in tests that pass
    /// their own times.
    /// </param>
    public FixedWindow(long permitLimit, long windowTicks, Timing.LimiterClock? clock = null)
    {
        Debug.Assert(permitLimit is > 0 and <= int.MaxValue);
        Debug.Assert(windowTicks > 0);
        _limit = permitLimit;
        _window = windowTicks;
        _maxFastEpoch = long.MaxValue / windowTicks - 1;
        _clock = clock;
    }

    public long PermitLimit => _limit;

    public long RefillTicks => _window;

    public long RefundHorizon => _window;

    public long PeriodTicks => _window;

    public bool CountsPeriod(ref long state, long epoch) => EpochCount.Holds(Volatile.Read(ref state), epoch);

    public long PeriodAt(long now) => now / _window;

    /// <summary>The word before the admission counted its window's permits (none if it held an older window), then these.</summary>
    public long UsedAfter(in Admission admission) =>
        (EpochCount.Holds(admission.Previous, admission.Marker) ? EpochCount.Count(admission.Previous) : 0) + admission.Permits;

    public long GetAvailableUpTo(ref long state, long now, long enough) => Math.Min(GetAvailablePermits(ref state, now), enough);

    public long CreateState() => EpochCount.Pack(0, 0);

    public long CreateState(long now) => EpochCount.Pack(now / _window, 0);

    public bool TryAcquire(ref long state, long now, long permits, out Admission admission, out long retryAfter)
    {
        Debug.Assert(permits > 0 && permits <= _limit);
        while (true)
        {
            long word = Volatile.Read(ref state);
            long epoch = CurrentEpoch(word, ref now, out long used);

            if (used + permits > _limit)
            {
                admission = default;
                retryAfter = (epoch + 1) * _window - now;
                return false;
            }

            // Linearization point: succeeds only if the word still holds this window and this count.
            if (Interlocked.CompareExchange(ref state, EpochCount.Pack(epoch, used + permits), word) == word)
            {
                admission = new Admission(Math.Max(now, epoch * _window), permits, epoch, word);
                retryAfter = 0;
                return true;
            }
        }
    }

    public bool Refund(ref long state, in Admission admission)
    {
        // Nobody admitted since: put the word back exactly (this also restores the previous window's idle time).
        long previousUsed = EpochCount.Holds(admission.Previous, admission.Marker) ? EpochCount.Count(admission.Previous) : 0;
        long ours = EpochCount.Pack(admission.Marker, previousUsed + admission.Permits);
        if (Interlocked.CompareExchange(ref state, admission.Previous, ours) == ours)
        {
            return true;
        }

        while (true)
        {
            long word = Volatile.Read(ref state);
            long used = EpochCount.Count(word);

            // The window has passed: its permits already came back, so there is nothing to free.
            if (!EpochCount.Holds(word, admission.Marker) || used < admission.Permits)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref state, EpochCount.Pack(admission.Marker, used - admission.Permits), word) == word)
            {
                return true;
            }
        }
    }

    public Admission Charge(ref long state, long now, long amount)
    {
        Debug.Assert(amount > 0);
        while (true)
        {
            long word = Volatile.Read(ref state);
            long epoch = CurrentEpoch(word, ref now, out long used);
            long counted = EpochCount.AddSaturating(used, amount);
            if (Interlocked.CompareExchange(ref state, EpochCount.Pack(epoch, counted), word) == word)
            {
                return new Admission(Math.Max(now, epoch * _window), counted - used, epoch, word);
            }
        }
    }

    public bool Refund(ref long state, in Admission admission, long amount)
    {
        Debug.Assert(amount > 0 && amount <= admission.Permits);
        if (amount == admission.Permits)
        {
            return Refund(ref state, admission);
        }

        while (true)
        {
            long word = Volatile.Read(ref state);
            long used = EpochCount.Count(word);
            if (!EpochCount.Holds(word, admission.Marker) || used < amount)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref state, EpochCount.Pack(admission.Marker, used - amount), word) == word)
            {
                return true;
            }
        }
    }

    public long GetUsed(ref long state, long now)
    {
        CurrentEpoch(Volatile.Read(ref state), ref now, out long used);
        return used;
    }

    public long GetResetAfter(ref long state, long now)
    {
        long epoch = CurrentEpoch(Volatile.Read(ref state), ref now, out long used);
        return used == 0 ? 0 : (epoch + 1) * _window - now;
    }

    public long GetAvailablePermits(ref long state, long now)
    {
        CurrentEpoch(Volatile.Read(ref state), ref now, out long used);
        return Math.Max(0, _limit - used);
    }

    public long GetRetryAfter(ref long state, long now, long permits)
    {
        long epoch = CurrentEpoch(Volatile.Read(ref state), ref now, out long used);
        return used + permits <= _limit ? 0 : (epoch + 1) * _window - now;
    }

    public long? GetFullSince(ref long state, long now)
    {
        long word = Volatile.Read(ref state);
        long nowEpoch = now / _window;
        long epoch = nowEpoch - EpochCount.Distance(nowEpoch, word);
        if (EpochCount.Count(word) == 0)
        {
            // Nothing counted in the word's window (a refund emptied it): as fresh as at that window's start.
            return epoch * _window;
        }

        // Permits were used in the word's window, so the limiter is full from the next window on.
        return epoch < nowEpoch ? (epoch + 1) * _window : null;
    }

    /// <summary>
    /// The window a decision at <paramref name="now"/> counts in, and what the word holds for it. A later window reads two
    /// ways: a window that really began, or a clock read more than <see cref="EpochCount.MaxLag"/> windows older than the
    /// word (a thread stalled between its clock read and now), wrapped by the 33-bit epoch to a later one, which would move
    /// the word back to a window that is over and admit past the limit there. So before a window change the clock is read
    /// again, after the word, and the decision taken at that later time: a stalled thread then decides in the word's
    /// window, a new window stays new. It costs a clock read once per window, not per admission.
    /// </summary>
    private long CurrentEpoch(long word, ref long now, out long used)
    {
        long nowEpoch = EpochCount.PeriodOf(now, word, _window, _maxFastEpoch);
        if (nowEpoch == EpochCount.StoredEpoch(word))
        {
            // The word's window (almost every decision): nothing more to work out.
            used = EpochCount.Count(word);
            return nowEpoch;
        }

        long distance = EpochCount.Distance(nowEpoch, word);
        if (distance > 0 && _clock is { } clock && clock.Now() is var fresh && fresh > now)
        {
            now = fresh;
            nowEpoch = now / _window;
            distance = EpochCount.Distance(nowEpoch, word);
        }

        if (distance > 0)
        {
            // A later window: the word's count belongs to a window that is over.
            used = 0;
            return nowEpoch;
        }

        // Now is behind the word's window (slow caller or clock going backwards): decide in the word's window.
        used = EpochCount.Count(word);
        return nowEpoch - distance;
    }
}
