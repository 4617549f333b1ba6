namespace RateEngine.Limiters;

/// <summary>
/// A single limiter's own state, with the count of successful leases its admit path made right beside it (statistics
/// only: decisions never read it).
/// </summary>
/// <remarks>
/// The count is taken by an atomic increment just after the admission's CAS, usually on the cache line that CAS has just
/// taken: 0.5-1 ns on the benchmark VM, where a per-thread cell of <see cref="StripedCounter"/> costs 2-3 ns (a
/// thread-static lookup, 1.4 ns, and two dependent loads), a third of an admit on the coarse clock. Under contention the line is
/// one every admission takes anyway. Partition keys, whose entries also derive from <see cref="StateCell{TState}"/>, keep
/// the striped count: eight more bytes per key would buy nothing there.
/// </remarks>
internal sealed class OwnedStateCell<TState> : StateCell<TState>, ISuccessCount
{
    public long Successes;

    public long Read() => Volatile.Read(ref Successes);
}
