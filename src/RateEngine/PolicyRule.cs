using RateEngine.Policies;

namespace RateEngine;

/// <summary>
/// What one layer of a <see cref="RatePolicy{TContext}"/> enforces: an algorithm with its window or period, a limit
/// (fixed here, or per tier from <see cref="PolicyTiers"/>), the meter it counts, and how it behaves. Immutable: each
/// <c>With</c>/<c>Counting</c> method returns a new rule.
/// </summary>
/// <remarks>
/// <para>Which algorithm for which layer: <see cref="FixedWindow"/> and <see cref="SlidingWindowCounter"/> count requests,
/// tokens or money per rolling window; <see cref="TokenBucket"/> smooths bursts; <see cref="SlidingWindowLog"/> is the exact
/// sliding window for request counts (it keeps a slot per permit, so it counts requests only); <see cref="Calendar"/> is a
/// daily or monthly budget that resets at midnight in a time zone; <see cref="Concurrency"/> caps requests in flight
/// (streams), released when their lease is disposed.</para>
/// <para>Tiers change a layer's limit, never its window, so a key's usage carries over when its tier changes. The log and
/// the bucket keep state whose shape depends on their limit, so they take a fixed limit only.</para>
/// </remarks>
public sealed class PolicyRule
{
    private PolicyRule(PolicyRuleKind kind, long? limit, TimeSpan window)
    {
        Kind = kind;
        Limit = limit;
        Window = window;
    }

    /// <summary>The fixed limit, or null when the layer takes its limit from the key's tier.</summary>
    public long? Limit { get; private init; }

    /// <summary>The window, the bucket's refill period, or <see cref="TimeSpan.Zero"/> for calendar and concurrency rules.</summary>
    public TimeSpan Window { get; private init; }

    /// <summary>The meter the layer counts. Default <see cref="PolicyMeter.Requests"/>.</summary>
    public PolicyMeter Meter { get; private init; }

    /// <summary>
    /// Whether the layer guards the whole service (a global cap): its refusals say so (<see cref="PolicyLease.IsServiceWide"/>),
    /// so HTTP can answer 503 for them and 429 for the rest. Default false.
    /// </summary>
    public bool IsServiceWide { get; private init; }

    /// <summary>
    /// Thresholds (fractions of the limit, ascending) of a soft layer: it never refuses, and reports each threshold once per
    /// period per key when usage reaches it. Empty for a hard layer (the default).
    /// </summary>
    public IReadOnlyList<double> SoftThresholds { get; private init; } = [];

    /// <summary>
    /// Whether a lease disposed without a reconcile gives its estimate back on this layer, less what its step charges
    /// consumed (those were spent). Default false: the estimate is kept, since the request may well have spent it.
    /// </summary>
    public bool RefundsUnreconciled { get; private init; }

    /// <summary>The human reason a refusal by this layer carries. Default: one composed from the layer's name and rule.</summary>
    public string? Reason { get; private init; }

    /// <summary>Segments per window of a <see cref="SlidingWindowCounter"/>; 0 otherwise.</summary>
    public int SegmentsPerWindow { get; private init; }

    /// <summary>Tokens added per period of a <see cref="TokenBucket"/>; 0 otherwise.</summary>
    public long TokensPerPeriod { get; private init; }

    /// <summary>The calendar period of a <see cref="Calendar"/> rule.</summary>
    public CalendarPeriod Period { get; private init; }

    /// <summary>The time zone whose midnight ends a calendar period. Default <see cref="TimeZoneInfo.Utc"/>.</summary>
    public TimeZoneInfo TimeZone { get; private init; } = TimeZoneInfo.Utc;

    internal PolicyRuleKind Kind { get; }

    /// <summary>Whether the rule caps requests in flight (<see cref="Concurrency"/>) rather than counting over time.</summary>
    public bool IsConcurrency => Kind == PolicyRuleKind.Concurrency;

    /// <summary>Whether the rule is a calendar budget (<see cref="Calendar"/>): its period ends at a local midnight, not after <see cref="Window"/>.</summary>
    public bool IsCalendar => Kind == PolicyRuleKind.Calendar;

    /// <summary>At most <paramref name="limit"/> per aligned window (per tier when null).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The window is not positive, or the limit is not in 1..<see cref="int.MaxValue"/>.</exception>
    public static PolicyRule FixedWindow(TimeSpan window, long? limit = null) =>
        new(PolicyRuleKind.FixedWindow, CheckIntLimit(limit), CheckWindow(window));

    /// <summary>At most <paramref name="limit"/> in any window, counted in <paramref name="segmentsPerWindow"/> segments (per tier when null).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The window is not positive, the segments are fewer than 1, more than <see cref="SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow"/> (each key's history holds a slot per segment) or do not divide the window, or the limit is not in 1..<see cref="int.MaxValue"/>.</exception>
    public static PolicyRule SlidingWindowCounter(TimeSpan window, int segmentsPerWindow, long? limit = null)
    {
        CheckWindow(window);
        ArgumentOutOfRangeException.ThrowIfLessThan(segmentsPerWindow, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(segmentsPerWindow, SlidingWindowCounterRateLimiterOptions.MaxSegmentsPerWindow);
        if (window.Ticks % segmentsPerWindow != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(segmentsPerWindow), segmentsPerWindow, "The segments must divide the window evenly.");
        }

        return new(PolicyRuleKind.SlidingWindowCounter, CheckIntLimit(limit), window) { SegmentsPerWindow = segmentsPerWindow };
    }

    /// <summary>
    /// The exact sliding window for request counts: at most <paramref name="limit"/> requests in any window. Each key's first
    /// request allocates its log, 24 bytes per permit of the limit, for every key the layer holds
    /// (<see cref="RatePolicyBuilder{TContext}.WithMaxKeysPerLayer"/>): for modest limits.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The window is not positive, or the limit is not in 1..2^24 (a slot per permit).</exception>
    public static PolicyRule SlidingWindowLog(TimeSpan window, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(limit, 1 << 24);
        return new(PolicyRuleKind.SlidingWindowLog, limit, CheckWindow(window));
    }

    /// <summary>A bucket of <paramref name="tokenLimit"/> refilled by <paramref name="tokensPerPeriod"/> every <paramref name="period"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value is not positive, or the token limit exceeds <see cref="int.MaxValue"/>.</exception>
    public static PolicyRule TokenBucket(long tokenLimit, long tokensPerPeriod, TimeSpan period)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(tokensPerPeriod, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(tokensPerPeriod, int.MaxValue);
        return new(PolicyRuleKind.TokenBucket, CheckIntLimit(tokenLimit), CheckWindow(period)) { TokensPerPeriod = tokensPerPeriod };
    }

    /// <summary>
    /// A budget per calendar day or month that resets at midnight in <paramref name="timeZone"/> (UTC when null), DST-correct:
    /// at most <paramref name="limit"/> per period (per tier when null). Amounts are <see cref="long"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The limit is below 1 or above <see cref="long.MaxValue"/> / 2, or the period is unknown.</exception>
    public static PolicyRule Calendar(CalendarPeriod period, long? limit = null, TimeZoneInfo? timeZone = null)
    {
        if (!Enum.IsDefined(period))
        {
            throw new ArgumentOutOfRangeException(nameof(period), period, "Unknown calendar period.");
        }

        return new(PolicyRuleKind.Calendar, CheckLongLimit(limit), TimeSpan.Zero) { Period = period, TimeZone = timeZone ?? TimeZoneInfo.Utc };
    }

    /// <summary>A calendar budget whose periods end at midnight in the time zone <paramref name="timeZoneId"/> (an IANA or Windows id).</summary>
    /// <inheritdoc cref="Calendar(CalendarPeriod, long?, TimeZoneInfo?)"/>
    /// <exception cref="ArgumentException">The id is null or blank.</exception>
    /// <exception cref="TimeZoneNotFoundException">This machine does not know the zone (its tz database lacks it, or the id is wrong).</exception>
    public static PolicyRule CalendarInZone(CalendarPeriod period, string timeZoneId, long? limit = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(timeZoneId);
        TimeZoneInfo zone;
        try
        {
            zone = TimeZoneInfo.FindSystemTimeZoneById(timeZoneId);
        }
        catch (TimeZoneNotFoundException exception)
        {
            throw new TimeZoneNotFoundException($"Unknown time zone '{timeZoneId}' for a calendar budget: this machine's time-zone database does not have it.", exception);
        }

        return Calendar(period, limit, zone);
    }

    /// <summary>At most <paramref name="limit"/> requests in flight (per tier when null); a request's slot is freed when its lease is disposed.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The limit is not in 1..<see cref="int.MaxValue"/>.</exception>
    public static PolicyRule Concurrency(long? limit = null) => new(PolicyRuleKind.Concurrency, CheckIntLimit(limit), TimeSpan.Zero);

    /// <summary>This rule counting <paramref name="meter"/> instead of requests.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The meter is unknown.</exception>
    /// <exception cref="ArgumentException">The rule cannot count it (the log and concurrency count requests only).</exception>
    public PolicyRule Counting(PolicyMeter meter)
    {
        if (!Enum.IsDefined(meter))
        {
            throw new ArgumentOutOfRangeException(nameof(meter), meter, "Unknown meter.");
        }

        if (meter != PolicyMeter.Requests && Kind is PolicyRuleKind.SlidingWindowLog or PolicyRuleKind.Concurrency)
        {
            throw new ArgumentException(
                $"A {Kind} rule counts requests only: " + (Kind == PolicyRuleKind.Concurrency
                    ? "it caps requests in flight."
                    : "it keeps a slot per permit, so a weight of a million tokens would cost a million slots. Use a sliding-window counter."),
                nameof(meter));
        }

        return Copy(meter: meter);
    }

    /// <summary>This rule as a global cap: its refusals are service-wide (503, not 429).</summary>
    public PolicyRule AsServiceWide() => Copy(serviceWide: true);

    /// <summary>
    /// This rule as a soft budget: it never refuses, and reports each of <paramref name="thresholds"/> (fractions of the
    /// limit, for example 0.5, 0.8, 1.0, 1.2, to a millionth) once per period per key when usage reaches it.
    /// </summary>
    /// <exception cref="ArgumentException">No thresholds, more than 31, not ascending or not positive; or the rule has no periods (only fixed windows and calendar budgets do).</exception>
    public PolicyRule AsSoft(params double[] thresholds)
    {
        ArgumentNullException.ThrowIfNull(thresholds);
        if (Kind is not (PolicyRuleKind.FixedWindow or PolicyRuleKind.Calendar))
        {
            throw new ArgumentException("Only fixed windows and calendar budgets have periods to report thresholds in.", nameof(thresholds));
        }

        if (thresholds.Length is 0 or > 31)
        {
            throw new ArgumentException("Give 1 to 31 thresholds.", nameof(thresholds));
        }

        for (int i = 0; i < thresholds.Length; i++)
        {
            if (!(thresholds[i] > 0) || double.IsInfinity(thresholds[i]) || (i > 0 && thresholds[i] <= thresholds[i - 1]))
            {
                throw new ArgumentException("Thresholds must be positive, finite and ascending.", nameof(thresholds));
            }
        }

        if (Limit is { } limit)
        {
            CheckReachable(Kind, limit, thresholds, nameof(thresholds));
        }

        return Copy(soft: [.. thresholds]);
    }

    /// <summary>
    /// This rule giving an unreconciled lease's estimate back when the lease is disposed, less what step charges consumed.
    /// A lease whose policy (or one of the policies a combined one joins) was disposed before it settled keeps its estimate:
    /// it can no longer be reconciled, so what it really cost is unknown.
    /// </summary>
    public PolicyRule RefundingUnreconciled() => Copy(refundsUnreconciled: true);

    /// <summary>This rule with the human reason its refusals carry (for example "daily cost cap reached").</summary>
    /// <exception cref="ArgumentException">The reason is null or blank.</exception>
    public PolicyRule WithReason(string reason)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reason);
        return Copy(reason: reason);
    }

    private PolicyRule Copy(
        PolicyMeter? meter = null, bool? serviceWide = null, double[]? soft = null, bool? refundsUnreconciled = null, string? reason = null) =>
        new(Kind, Limit, Window)
        {
            Meter = meter ?? Meter,
            IsServiceWide = serviceWide ?? IsServiceWide,
            SoftThresholds = soft ?? SoftThresholds,
            RefundsUnreconciled = refundsUnreconciled ?? RefundsUnreconciled,
            Reason = reason ?? Reason,
            SegmentsPerWindow = SegmentsPerWindow,
            TokensPerPeriod = TokensPerPeriod,
            Period = Period,
            TimeZone = TimeZone,
        };

    private static TimeSpan CheckWindow(TimeSpan window, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(window))] string? name = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero, name);
        return window;
    }

    private static long? CheckIntLimit(long? limit, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(limit))] string? name = null)
    {
        if (limit is { } value)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1, name);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, int.MaxValue, name);
        }

        return limit;
    }

    /// <summary>
    /// Throws unless a soft layer's usage can reach its highest threshold at <paramref name="limit"/>: a fixed window counts
    /// at most 2^31 - 1 in a window and a calendar budget long.MaxValue / 2 in a period (a charge past that saturates), and
    /// a threshold beyond would never be reported. The comparison is the one the layer makes, in millionths.
    /// </summary>
    internal static void CheckReachable(PolicyRuleKind kind, long limit, IReadOnlyList<double> thresholds, string paramName)
    {
        if (thresholds.Count == 0)
        {
            return;
        }

        long most = kind == PolicyRuleKind.Calendar ? long.MaxValue / 2 : Algorithms.EpochCount.MaxCount;
        long top = (long)Math.Round(thresholds[^1] * 1_000_000);
        if ((Int128)most * 1_000_000 < (Int128)top * limit)
        {
            throw new ArgumentOutOfRangeException(
                paramName, limit, $"A limit of {limit} puts the threshold {thresholds[^1]} past the most a {kind} layer counts ({most}): it would never be reported.");
        }
    }

    internal static long? CheckLongLimit(long? limit, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(limit))] string? name = null)
    {
        if (limit is { } value)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1, name);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, long.MaxValue / 2, name);
        }

        return limit;
    }
}
