namespace RateEngine.Redis.Hybrid;

/// <summary>
/// One key's local state on one node: its current block and the reservation in flight. The limiter's keys carry their
/// rule (<see cref="LimiterKey"/>), a layered policy's keys their layer's limit (<see cref="Policies.LayerKey"/>).
/// </summary>
internal abstract class LocalKey(string partitionKey)
{
    public string PartitionKey { get; } = partitionKey;

    /// <summary>
    /// The key on Redis, made when a reservation or a return needs it (about one call per block): kept, the string was the
    /// largest part of a key's state on every node, between the hot objects of the keys around it.
    /// </summary>
    public abstract string RedisKey { get; }

    public LocalBlock Block = LocalBlock.Empty;

    /// <summary>The reservation in flight, at most one per key (guarded by the key's lock when started or cleared).</summary>
    public Task<LocalBlock>? Refill;

    /// <summary>
    /// The reservation of <see cref="Refill"/> while it is one script call on the wire (a <c>LocalReservations.Ticket</c>):
    /// a caller blocked on the refill reads its answer from here (see <c>LocalReservations.WaitForRefill</c>).
    /// </summary>
    public object? OnTheWire;

    /// <summary>When the key was last used, to a resolution of the reservations' touch interval.</summary>
    public long LastUsed;

    /// <summary>
    /// What one request takes here, at most (1 for a limiter's permits; a request's tokens or money on a weighted layer):
    /// blocks are sized in requests, so a block of MaxBlock requests is MaxBlock × this.
    /// </summary>
    public long Unit = 1;

    /// <summary>
    /// Set when the idle sweep forgot the key: a lease that still holds it (a long stream) gives its refunds to Redis, and a
    /// block that lands in it goes back, since no request finds the key any more.
    /// </summary>
    public volatile bool Forgotten;

    /// <summary>
    /// Pays what the key owes Redis out of a grant that lands while its period lasts (those permits are counted there, so
    /// using them for a debt counts it): the amount paid, at most <paramref name="granted"/>. Nothing for a limiter's key.
    /// </summary>
    public virtual long PayFromGrant(long granted) => 0;

    /// <summary>Whether the idle sweep may forget the key (not while it owes Redis something).</summary>
    public virtual bool MayForget => true;
}
