namespace RateEngine.Redis;

/// <summary>
/// The hybrid mode: each node serves acquires from a local block of permits reserved from Redis in one script call, so
/// a busy key costs one round trip per block instead of one per request. Served for the fixed window and the
/// sliding-window counter.
/// </summary>
/// <remarks>
/// <para><b>The guarantee</b> holds across all nodes for the times permits are used: a block's permits are counted in
/// Redis in the period (window, or counter segment) they were reserved in, and a node uses them only while that period
/// lasts on its clock (the period's remaining time, measured from before the call was sent, so never later than the
/// server's end). Unused permits go back when the block is replaced, when its key is idle and when the limiter is
/// disposed; what cannot go back in time (a block that ends with its period) expires with it.</para>
/// <para><b>Under-admission</b> per key and period is at most the permits held in nodes' blocks when the period ends:
/// at most N × <see cref="MaxBlock"/> for N nodes, and less near the cap, where a reservation takes at most half of what
/// is left (beyond what its waiting request needs), so blocks shrink toward one permit.</para>
/// </remarks>
public sealed class RedisHybridOptions
{
    /// <summary>
    /// The most permits one reservation takes. Default 1,024. A key's blocks start at one permit and double with the demand
    /// the last block served, up to this; near the cap a reservation takes at most half of what is left, so blocks shrink
    /// toward one permit there whatever this is.
    /// </summary>
    public int MaxBlock { get; set; } = 1024;

    /// <summary>
    /// A key's unused permits go back to Redis after it has been idle this long, and the key is forgotten locally.
    /// Default 1 second.
    /// </summary>
    public TimeSpan IdleReturn { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How often a layered policy in hybrid mode reads its pause switch, so that a pause or a resume set on another node
    /// reaches this one within this interval (it also learns at its next reservation). Default 500 milliseconds.
    /// </summary>
    public TimeSpan PauseCheckInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxBlock, 1, nameof(MaxBlock));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(IdleReturn, TimeSpan.Zero, nameof(IdleReturn));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(IdleReturn, RedisLimiterOptions.MaxTimerPeriod, nameof(IdleReturn));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(PauseCheckInterval, TimeSpan.Zero, nameof(PauseCheckInterval));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(PauseCheckInterval, RedisLimiterOptions.MaxTimerPeriod, nameof(PauseCheckInterval));
    }

    internal RedisHybridOptions Snapshot() => (RedisHybridOptions)MemberwiseClone();
}
