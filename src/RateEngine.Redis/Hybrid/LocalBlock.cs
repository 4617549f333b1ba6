namespace RateEngine.Redis.Hybrid;

/// <summary>
/// Permits one node reserved for one key: usable until <see cref="ExpiresAt"/> on the node's clock (the end of the period
/// Redis counted them in), or a cached refusal that answers locally until then.
/// </summary>
internal sealed class LocalBlock(long granted, long remaining, long expiresAt, long period, long refusedNeed, long limit = 0, long usedAtGrant = 0, long retryAt = 0)
{
    public static readonly LocalBlock Empty = new(0, 0, long.MinValue, long.MinValue, refusedNeed: 0);

    /// <summary>The cap the block was reserved under (a layered policy's tier may lower it later: the block is then given back).</summary>
    public long Limit { get; } = limit;

    /// <summary>The key's usage on Redis right after the grant (this block included), for response headers.</summary>
    public long UsedAtGrant { get; } = usedAtGrant;

    /// <summary>Permits left; taken by CAS, so two callers never take the same permit.</summary>
    public long Remaining = remaining;

    public long Granted { get; } = granted;

    public long ExpiresAt { get; } = expiresAt;

    /// <summary>
    /// When the block's period ends on the node's clock, as the script reported it: what a usage report's reset says. The
    /// block stops serving a margin before it (<see cref="ExpiresAt"/>); unset, the same time.
    /// </summary>
    public long PeriodEndsAt
    {
        get => _periodEndsAt == long.MinValue ? ExpiresAt : _periodEndsAt;
        init => _periodEndsAt = value;
    }

    private readonly long _periodEndsAt = long.MinValue;

    /// <summary>The window or segment the permits were counted in (what a return names).</summary>
    public long Period { get; } = period;

    /// <summary>Redis refused a reservation of <see cref="RefusedNeed"/> permits: answered locally, until <see cref="ExpiresAt"/>, for requests at least that large.</summary>
    public bool Refused => RefusedNeed > 0;

    /// <summary>
    /// A refusal's retry time on the node's clock (what the response says); the refusal is cached only until
    /// <see cref="ExpiresAt"/>, which may be sooner, so that permits other nodes give back meanwhile are seen.
    /// </summary>
    public long RetryAt { get; } = retryAt == 0 ? expiresAt : retryAt;

    /// <summary>Whether the block holds permits that may be used at <paramref name="now"/>: not a cached refusal, and its period not over.</summary>
    public bool ServesAt(long now) => !Refused && now < ExpiresAt;

    /// <summary>The permits a refused reservation needed (0 for a block of permits).</summary>
    public long RefusedNeed { get; } = refusedNeed;

    /// <summary>
    /// Takes <paramref name="permits"/> if this block has them: the permits left after the take, or -1 when it had too few.
    /// Zero permits are taken only from a block with one left (a full layer refuses even a free request, as in process).
    /// </summary>
    public long TryTake(long permits)
    {
        long left = Volatile.Read(ref Remaining);
        while (left >= Math.Max(permits, 1))
        {
            long seen = Interlocked.CompareExchange(ref Remaining, left - permits, left);
            if (seen == left)
            {
                return left - permits;
            }

            left = seen;
        }

        return -1;
    }

    /// <summary>Takes up to <paramref name="permits"/>: as many as are left, if fewer.</summary>
    public long TakeUpTo(long permits)
    {
        long left = Volatile.Read(ref Remaining);
        while (left > 0)
        {
            long taken = Math.Min(left, permits);
            long seen = Interlocked.CompareExchange(ref Remaining, left - taken, left);
            if (seen == left)
            {
                return taken;
            }

            left = seen;
        }

        return 0;
    }

    /// <summary>Takes every permit left (for a return, or a merge into the next block).</summary>
    public long TakeAll() => Interlocked.Exchange(ref Remaining, 0);
}
