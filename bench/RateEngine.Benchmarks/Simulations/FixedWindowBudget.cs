namespace RateEngine.Benchmarks.Simulations;

/// <summary>
/// One user's tokens-per-minute budget in the simulation: a plain fixed-window counter with reserve-then-reconcile, on
/// the simulation's virtual clock. It stands in for the policy engine that will consume the estimator.
/// </summary>
/// <remarks>
/// A request is admitted when the window's charged tokens plus its reservation fit the budget. When it ends, the
/// difference (actual − reserved) is applied to the window it was reserved in if that window is still current: a
/// refund frees budget, an overrun takes more. If that window has ended, a refund is lost (the window is gone) and an
/// overrun is charged to the current window, so the budget never gives away tokens it did not have.
/// </remarks>
internal sealed class FixedWindowBudget(long tokensPerWindow, double windowSeconds)
{
    private long _window = -1;
    private long _charged;

    /// <summary>The index of the window <paramref name="now"/> falls in.</summary>
    public long WindowOf(double now) => (long)Math.Floor(now / windowSeconds);

    /// <summary>Reserves <paramref name="tokens"/> if they fit; returns the window reserved in, or -1 when refused.</summary>
    public long TryReserve(double now, long tokens)
    {
        Roll(now);
        if (_charged + tokens > tokensPerWindow)
        {
            return -1;
        }

        _charged += tokens;
        return _window;
    }

    public void Reconcile(double now, long reservedIn, long reserved, long actual)
    {
        Roll(now);
        if (reservedIn == _window)
        {
            _charged += actual - reserved;
        }
        else if (actual > reserved)
        {
            _charged += actual - reserved;
        }
    }

    private void Roll(double now)
    {
        long window = WindowOf(now);
        if (window != _window)
        {
            _window = window;
            _charged = 0;
        }
    }
}
