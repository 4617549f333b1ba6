using RateEngine.Algorithms;

namespace RateEngine.Limiters;

/// <summary>
/// How a limiter's admit path reaches its host. Generic code over a struct is compiled once per struct type, so the admit
/// path, written once over this interface, becomes a direct call the JIT inlines for each host type a sealed limiter
/// names, and stays a virtual call for any other (<see cref="AnyHostCall"/>).
/// </summary>
/// <remarks>
/// Profile-guided devirtualization does this for one host type only, the one the shared method's profile saw most: in a
/// process that also used another limiter type, the others paid a virtual call and lost inlining, 3 ns of an 8 ns admit
/// on the coarse clock, and which type won changed from run to run.
/// </remarks>
internal interface IHostCall
{
    bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter);

    /// <summary>Counts a successful lease: in <paramref name="counters"/>, or where the host keeps its own count.</summary>
    void CountSuccess(LeaseCounters counters, in Admission admission);
}

/// <summary>Any host, through its virtual methods.</summary>
internal readonly struct AnyHostCall(AlgorithmHost host) : IHostCall
{
    public bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter) =>
        host.TryAcquire(now, permits, out admission, out retryAfter);

    public void CountSuccess(LeaseCounters counters, in Admission admission) => counters.Succeeded();
}

/// <summary>A limiter's own state, with no blocks.</summary>
internal readonly struct SingleHostCall<TAlgorithm, TState>(AlgorithmHost<TAlgorithm, TState> host) : IHostCall
    where TAlgorithm : struct, IRateAlgorithm<TState>
{
    public bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter) =>
        host.TryAcquire(now, permits, out admission, out retryAfter);

    /// <summary>Beside the state its CAS just wrote (see <see cref="OwnedStateCell{TState}"/>).</summary>
    public void CountSuccess(LeaseCounters counters, in Admission admission)
    {
        if (host.Owned is { } owned)
        {
            Interlocked.Increment(ref owned.Successes);
        }
        else
        {
            counters.Succeeded();
        }
    }
}

/// <summary>Per-core blocks of a window algorithm.</summary>
internal readonly struct StripedHostCall<TAlgorithm, TState>(StripedHost<TAlgorithm, TState> host) : IHostCall
    where TAlgorithm : struct, IPeriodBlockAlgorithm<TState>
{
    public bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter) =>
        host.TryAcquire(now, permits, out admission, out retryAfter);

    /// <summary>On the stripe that served it (see <see cref="PerCoreHost.CountSuccess"/>).</summary>
    public void CountSuccess(LeaseCounters counters, in Admission admission) => host.CountSuccess(admission);
}

/// <summary>Per-core blocks of a token bucket.</summary>
internal readonly struct PerCoreBucketHostCall(PerCoreBucketHost host) : IHostCall
{
    public bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter) =>
        host.TryAcquire(now, permits, out admission, out retryAfter);

    /// <summary>On the stripe that served it (see <see cref="PerCoreHost.CountSuccess"/>).</summary>
    public void CountSuccess(LeaseCounters counters, in Admission admission) => host.CountSuccess(admission);
}
