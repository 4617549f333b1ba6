namespace RateEngine.Redis;

/// <summary>
/// A node's share of a limit while Redis does not answer (<see cref="RedisFailureMode.LocalFallback"/>): 1/N of the live
/// nodes the heartbeats counted (<paramref name="nodes"/> above 0), or the configured <paramref name="fraction"/>.
/// </summary>
internal readonly struct FallbackShare(double fraction, int nodes)
{
    public static FallbackShare OfNodes(int nodes) => new(1.0 / nodes, nodes);

    public static FallbackShare Configured(double fraction) => new(fraction, 0);

    /// <summary>
    /// The share of a limit, rounded down, at least 1 (a node refuses nothing it could never admit). By integer division
    /// for N nodes: a floating 1/N times the limit can round a share up.
    /// </summary>
    public int Of(int limit) => Math.Max(1, nodes > 0 ? limit / nodes : (int)Math.Floor(limit * fraction));

    /// <summary>
    /// The period over which <see cref="Of"/>(<paramref name="amount"/>) is the share of <paramref name="amount"/> per
    /// <paramref name="period"/>: a rate's share keeps its amount (rounded up to 1, every node would refill at the fleet's
    /// whole rate) and stretches its period instead. Rounded up to a whole tick, so the rate never passes the share.
    /// </summary>
    public TimeSpan Stretch(TimeSpan period, int amount)
    {
        double exact = period.Ticks * (double)Of(amount) / (amount * (nodes > 0 ? 1.0 / nodes : fraction));
        return exact >= TimeSpan.MaxValue.Ticks ? TimeSpan.MaxValue : TimeSpan.FromTicks(Math.Max(period.Ticks, (long)Math.Ceiling(exact)));
    }
}
