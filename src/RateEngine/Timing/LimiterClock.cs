using System.Diagnostics;

namespace RateEngine.Timing;

/// <summary>
/// The time base every algorithm reads: non-negative, never decreasing ticks since the limiter was created.
/// </summary>
/// <remarks>
/// <para>Automatically replenished limiters read the provider's clock; a tick is one <see cref="TimeProvider.TimestampFrequency"/>
/// unit. Manually replenished ones read a counter that only <see cref="TryAdvance"/> moves (see
/// <see cref="ManualReplenishment"/>). Algorithms cannot tell the two apart: they see a counter and windows in the same
/// ticks.</para>
/// <para>Time never goes backwards here: <see cref="Now"/> returns the largest time this clock has returned, so a provider
/// stepped back (by any amount: a wall-clock based provider, <c>FakeTimeProvider.AdjustTime</c>) reads as "no time
/// passed" until it catches up, for every algorithm and every key alike. <see cref="TimeProvider.System"/> reads
/// <see cref="Stopwatch"/>, which is monotonic, so it skips the high-water mark and its shared write. So does a coarse
/// provider (<see cref="ICoarseClock"/>, <c>CoarseTimeProvider</c>), whose cached field is read directly, without a
/// virtual call: it never decreases by construction.</para>
/// </remarks>
internal sealed class LimiterClock
{
    private readonly TimeProvider _provider;
    private readonly bool _isSystemProvider;

    /// <summary>A coarse provider's cached timestamp, read directly; null for any other provider.</summary>
    private readonly CoarseTicker? _ticker;
    private readonly long _origin;
    private readonly ManualReplenishment _mode;
    private readonly TimeSpan _stepPeriod;
    private readonly long _stepPeriodTimestampTicks;

    /// <summary>
    /// A coarse clock's lag range in its ticks (its period), 0 for the others: a RETRY_AFTER measured on a reading that
    /// lagged little may meet one that lags more, a retry then read up to this much early.
    /// </summary>
    private readonly long _coarseLag;
    private long _manualTicks;
    private long _lastCredit;

    /// <summary>The largest time <see cref="Now"/> has returned (providers other than the system one).</summary>
    private long _latest;

    /// <summary>The highest TimestampFrequency accepted: 10 GHz (Stopwatch's is 1 GHz on Linux, 10 MHz on Windows).</summary>
    public const long MaxFrequency = 10_000_000_000;

    /// <exception cref="ArgumentOutOfRangeException">The provider's <see cref="TimeProvider.TimestampFrequency"/> is not positive, or above <see cref="MaxFrequency"/>.</exception>
    public LimiterClock(TimeProvider provider, ManualReplenishment mode = ManualReplenishment.None, TimeSpan stepPeriod = default)
    {
        if (provider.TimestampFrequency <= 0)
        {
            throw new ArgumentOutOfRangeException(
                "timeProvider", provider.TimestampFrequency, "The time provider's TimestampFrequency must be greater than 0.");
        }

        // Time stops at TimeMath.MaxTicks (2^61 ticks): at 10 GHz that is seven years after the limiter was made, at
        // 1 THz under a month, after which every window would stay where it is and every key refused.
        if (provider.TimestampFrequency > MaxFrequency)
        {
            throw new ArgumentOutOfRangeException(
                "timeProvider", provider.TimestampFrequency, $"The time provider's TimestampFrequency must be at most {MaxFrequency:N0} ticks per second.");
        }

        _provider = provider;
        _isSystemProvider = ReferenceEquals(provider, TimeProvider.System);
        _ticker = (provider as ICoarseClock)?.Ticker;

        // Through the provider: a coarse provider's first read starts its ticker, so Now may read the field directly.
        _origin = _lastCredit = provider.GetTimestamp();
        _mode = mode;
        _stepPeriod = stepPeriod;
        _stepPeriodTimestampTicks = TimeMath.ToTicks(stepPeriod, provider.TimestampFrequency);
        _coarseLag = _ticker is { } coarse ? TimeMath.ToTicks(TimeSpan.FromMilliseconds(coarse.PeriodMilliseconds), provider.TimestampFrequency) : 0;
    }

    public bool IsManual => _mode != ManualReplenishment.None;

    /// <summary>How far a coarse clock's reading may lag: its period, or the longest recent gap between its ticks if longer.</summary>
    private long CoarseLag() => _ticker is { } ticker ? Math.Max(_coarseLag, ticker.LongestRecentGap) : 0;

    public TimeProvider Provider => _provider;

    /// <summary>The algorithms' current time: ticks since creation, never negative and never less than before.</summary>
    public long Now()
    {
        if (_mode != ManualReplenishment.None)
        {
            return Volatile.Read(ref _manualTicks);
        }

        if (_ticker is { } ticker)
        {
            return Math.Clamp(ticker.Timestamp - _origin, 0, TimeMath.MaxTicks);
        }

        if (_isSystemProvider)
        {
            return Math.Clamp(Stopwatch.GetTimestamp() - _origin, 0, TimeMath.MaxTicks);
        }

        return Latest(Math.Clamp(_provider.GetTimestamp() - _origin, 0, TimeMath.MaxTicks));
    }

    /// <summary>
    /// How far the provider reads behind the time this clock holds, after it stepped back: what a wait must add before the
    /// clock moves again. 0 for the providers that never go back (the system's, a coarse one), which skip the mark.
    /// </summary>
    private long Behind()
    {
        if (_ticker is not null || _isSystemProvider)
        {
            return 0;
        }

        // Not clamped at the clock's start: a provider stepped back to before it must catch up that far too.
        long raw = Math.Min(_provider.GetTimestamp() - _origin, TimeMath.MaxTicks);
        long latest = Volatile.Read(ref _latest);
        return raw >= latest ? 0 : raw < latest - TimeMath.MaxTicks ? TimeMath.MaxTicks : latest - raw;
    }

    /// <summary>Raises the high-water mark to <paramref name="elapsed"/> if it is larger; returns the mark.</summary>
    private long Latest(long elapsed)
    {
        long latest = Volatile.Read(ref _latest);
        while (elapsed > latest)
        {
            long seen = Interlocked.CompareExchange(ref _latest, elapsed, latest);
            if (seen == latest)
            {
                return elapsed;
            }

            latest = seen;
        }

        return latest;
    }

    /// <summary>The provider's timestamp, for measuring real durations such as <c>IdleDuration</c>.</summary>
    public long Timestamp() =>
        _ticker is { } ticker ? ticker.Timestamp : _isSystemProvider ? Stopwatch.GetTimestamp() : _provider.GetTimestamp();

    /// <summary>
    /// Manual modes: moves time as <c>TryReplenish</c> would. <paramref name="isFull"/> is whether the limiter holds all
    /// its permits. Returns whether time moved. Callers serialize calls (the limiter's queue lock).
    /// </summary>
    public bool TryAdvance(bool isFull)
    {
        Debug.Assert(IsManual);
        long now = _provider.GetTimestamp();
        long elapsed = now - _lastCredit;
        if (_mode == ManualReplenishment.Step)
        {
            if (elapsed < _stepPeriodTimestampTicks)
            {
                return false;
            }

            Volatile.Write(ref _lastCredit, now);
            Interlocked.Increment(ref _manualTicks);
            return true;
        }

        if (isFull)
        {
            return false;
        }

        // Even a zero credit counts as a replenishment (the in-box bucket then serves its queue). A provider that stepped
        // back credits nothing and keeps the last credit's time: moving it back would credit the step forward again.
        if (elapsed > 0)
        {
            Volatile.Write(ref _lastCredit, now);
            Interlocked.Add(ref _manualTicks, elapsed);
        }

        return true;
    }

    /// <summary>
    /// The provider time a caller must wait until <paramref name="ticks"/> of this clock have passed: the
    /// <c>RETRY_AFTER</c> of a rejection. For a manual clock that counts the time already elapsed since the last move,
    /// which the next <c>TryReplenish</c> credits (<see cref="ManualReplenishment.Elapsed"/>) or which brings the next
    /// step closer (<see cref="ManualReplenishment.Step"/>: the first step may come one period after the last one, each
    /// further step one period later), as the in-box limiters' <c>Window - elapsed</c> does. For an automatic clock whose
    /// provider stepped back, it adds the time the provider takes to catch up with this clock (which stood still meanwhile).
    /// </summary>
    public TimeSpan ToRetryAfter(long ticks)
    {
        if (ticks <= 0)
        {
            return TimeSpan.Zero;
        }

        if (_mode == ManualReplenishment.None)
        {
            // A provider that stepped back reads behind the time this clock holds: it must first catch up. A coarse clock's
            // reading at the retry may lag more than this one did: by as much as the ticker's gaps between ticks have lately
            // been (its period at least; more when its thread wakes late).
            long behind = Behind() + CoarseLag();
            return ToTimeSpan(behind > TimeMath.MaxTicks - ticks ? TimeMath.MaxTicks : ticks + behind);
        }

        // Negative after the provider stepped back: the wait then includes its catch-up, as TryAdvance credits nothing till then.
        // A credit or a step already due comes only with the application's next TryReplenish, whose time this clock cannot
        // know: one period then (the cadence the limiter was configured for), not zero, which would send clients straight
        // back into refusals. The in-box limiters never answer less than a period either.
        long waited = _provider.GetTimestamp() - Volatile.Read(ref _lastCredit);
        if (_mode == ManualReplenishment.Elapsed)
        {
            return ticks > waited ? TimeMath.ToTimeSpan(ticks - waited, _provider.TimestampFrequency) : _stepPeriod;
        }

        TimeSpan first = waited < _stepPeriodTimestampTicks
            ? TimeMath.ToTimeSpan(_stepPeriodTimestampTicks - waited, _provider.TimestampFrequency)
            : _stepPeriod;
        // Each further step takes a period as the provider counts it (rounded up to its ticks), not the exact span: at a
        // frequency that cannot show the period exactly, the exact span is short by a provider tick per step.
        TimeSpan later = ticks - 1 > TimeMath.MaxTicks / Math.Max(1, _stepPeriodTimestampTicks)
            ? TimeSpan.MaxValue
            : TimeMath.ToTimeSpan(_stepPeriodTimestampTicks * (ticks - 1), _provider.TimestampFrequency);
        return later >= TimeSpan.MaxValue - first ? TimeSpan.MaxValue : later + first;
    }

    /// <summary>Converts a span to clock ticks, rounding up so that a window is never shorter than asked for.</summary>
    public long ToTicks(TimeSpan span) => TimeMath.ToTicks(span, _provider.TimestampFrequency);

    /// <summary>Converts algorithm ticks to a span, rounding up: waiting that long is enough.</summary>
    public TimeSpan ToTimeSpan(long ticks)
    {
        if (ticks <= 0)
        {
            return TimeSpan.Zero;
        }

        if (_mode == ManualReplenishment.Step)
        {
            Int128 total = (Int128)_stepPeriod.Ticks * ticks;
            return total >= TimeSpan.MaxValue.Ticks ? TimeSpan.MaxValue : new TimeSpan((long)total);
        }

        return TimeMath.ToTimeSpan(ticks, _provider.TimestampFrequency);
    }

    /// <summary>Real time elapsed between two provider timestamps; zero if the clock went backwards.</summary>
    public TimeSpan Elapsed(long fromTimestamp, long toTimestamp) =>
        toTimestamp <= fromTimestamp ? TimeSpan.Zero : _provider.GetElapsedTime(fromTimestamp, toTimestamp);

    /// <summary>Automatic mode: the provider timestamp of an algorithm time.</summary>
    public long ToTimestamp(long ticks) => _origin + ticks;
}
