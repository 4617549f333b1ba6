using System.Collections.Concurrent;
using RateEngine.Budgets;

namespace RateEngine;

/// <summary>
/// Sizes the reservation of a request whose cost is known only when it ends (the tokens of an LLM response): a high
/// quantile of the actual costs recently observed for the same selector (a model name, say), bounded by the request's
/// maximum (its <c>max_tokens</c>), and the maximum itself until the selector has been observed often enough.
/// </summary>
/// <typeparam name="TSelector">
/// What requests of one cost distribution share: a model name, a (model, endpoint) pair, an enum. Generic rather than
/// keyed by string so that a caller that already has a typed key neither formats nor allocates one per request, as
/// <see cref="PartitionedLimiter"/> takes its keys.
/// </typeparam>
/// <remarks>
/// <para><b>The quantile.</b> Each selector keeps its last <see cref="CostEstimatorOptions.SampleCount"/> (N) actuals in
/// a ring. Every k = max(1, n / 64) observations for the n actuals held (4 for the default N = 256 once full), and on the
/// observation that completes the warm-up, <see cref="Observe"/> copies the ring, sorts the copy (an in-place introsort: O(N log N), no allocation,
/// about 64·log2 N comparisons per observation amortized) and caches the nearest-rank quantile: the smallest sample x
/// such that at least ⌈q·n⌉ of the n samples are ≤ x. <see cref="Estimate"/> reads that cached value and never sorts.
/// The error bound: the cached value is the exact empirical quantile of the window as it was at most k − 1
/// observations ago, so it may miss at most the last k − 1 actuals (under 1.6 % of the window); it is one of the
/// observed actuals, not an interpolation, so when every sample is c the estimate is exactly c. As an estimate of the
/// true quantile of the selector's distribution, it has the sampling error of N samples: for q = 0.95 and N = 256, the
/// fraction of requests above it is 5 % ± about 2.7 % (two standard deviations).</para>
/// <para><b>Threads.</b> <see cref="Estimate"/> is lock-free and allocation-free: one read of a concurrent dictionary
/// and one volatile read of the cached value. <see cref="Observe"/> takes a short lock on its selector's window (the
/// ring write, and every k-th time the sort): a lock-free ring would still need a consistent snapshot to sort, and
/// observations arrive once per response, far less often than estimates are read, so the lock is uncontended in
/// practice and never blocks an estimate. Observing a selector for the first time takes a lock of the estimator and
/// allocates its window (16·N bytes).</para>
/// <para><b>Bounds.</b> An estimate is always in [1, maximum]: an actual of 0 still reserves 1. At most
/// <see cref="CostEstimatorOptions.MaxSelectors"/> selectors are kept; beyond them a selector is never learned and its
/// estimate is the maximum, which only under-admits. The estimator has no clock: "recent" means the last N
/// observations, however old they are.</para>
/// </remarks>
public sealed class CostEstimator<TSelector>
    where TSelector : notnull
{
    private readonly ConcurrentDictionary<TSelector, SampleWindow> _windows;
    private readonly Lock _addLock = new();
    private readonly double _quantile;
    private readonly int _sampleCount;
    private readonly int _minimumSamples;
    private readonly double _headroom;
    private readonly int _maxSelectors;
    private int _selectorCount;

    /// <summary>Creates an estimator with the default options.</summary>
    public CostEstimator()
        : this(new CostEstimatorOptions())
    {
    }

    /// <summary>Creates an estimator.</summary>
    /// <param name="options">The options, validated and copied here.</param>
    /// <param name="comparer">How selectors are compared; null for <see cref="EqualityComparer{T}.Default"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public CostEstimator(CostEstimatorOptions options, IEqualityComparer<TSelector>? comparer = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        EstimatorValidation.Validate(options);
        _quantile = options.Quantile;
        _sampleCount = options.SampleCount;
        _minimumSamples = options.MinimumSamples;
        _headroom = options.Headroom;
        _maxSelectors = options.MaxSelectors;
        _windows = new ConcurrentDictionary<TSelector, SampleWindow>(comparer ?? EqualityComparer<TSelector>.Default);
    }

    /// <summary>How many selectors the estimator holds state for (at most <see cref="CostEstimatorOptions.MaxSelectors"/>).</summary>
    public int SelectorCount => Volatile.Read(ref _selectorCount);

    /// <summary>
    /// The cost to reserve for a request of <paramref name="selector"/> whose cost is at most <paramref name="maximum"/>:
    /// the cached quantile of its recent actuals (times the headroom), bounded to [1, <paramref name="maximum"/>]; the
    /// maximum while the selector has fewer than <see cref="CostEstimatorOptions.MinimumSamples"/> observations or is
    /// not held. Lock-free and allocation-free; it never adds a selector.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="selector"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maximum"/> is less than 1.</exception>
    public long Estimate(TSelector selector, long maximum)
    {
        ArgumentNullException.ThrowIfNull(selector);
        ArgumentOutOfRangeException.ThrowIfLessThan(maximum, 1);
        if (!_windows.TryGetValue(selector, out SampleWindow? window))
        {
            return maximum;
        }

        long learned = window.Cached;
        return learned == SampleWindow.NotReady ? maximum : Math.Min(learned, maximum);
    }

    /// <summary>
    /// Records the actual cost of a finished request of <paramref name="selector"/>. A selector seen for the first time
    /// is added unless <see cref="CostEstimatorOptions.MaxSelectors"/> are held, in which case the observation is
    /// ignored. Takes a short lock on the selector's window.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="selector"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="actual"/> is negative.</exception>
    public void Observe(TSelector selector, long actual)
    {
        ArgumentNullException.ThrowIfNull(selector);
        ArgumentOutOfRangeException.ThrowIfNegative(actual);
        if (_windows.TryGetValue(selector, out SampleWindow? window) || (window = Add(selector)) is not null)
        {
            window.Add(actual, _quantile, _headroom, _minimumSamples);
        }
    }

    /// <summary>The selector's new window, or null when the estimator holds as many selectors as it may.</summary>
    private SampleWindow? Add(TSelector selector)
    {
        // Full: refuse without the lock (and without ConcurrentDictionary.Count, which takes every lock of the
        // dictionary), so a caller flooding new selectors costs one read per observation.
        if (Volatile.Read(ref _selectorCount) >= _maxSelectors)
        {
            return null;
        }

        lock (_addLock)
        {
            if (_windows.TryGetValue(selector, out SampleWindow? existing))
            {
                return existing;
            }

            if (_selectorCount >= _maxSelectors)
            {
                return null;
            }

            var window = new SampleWindow(_sampleCount);
            _windows[selector] = window;
            Volatile.Write(ref _selectorCount, _selectorCount + 1);
            return window;
        }
    }
}
