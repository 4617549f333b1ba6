using RateEngine.Algorithms;

namespace RateEngine.Limiters;

/// <summary>
/// What the per-core hosts share: one <see cref="BlockStripe"/> per core, the choice of a request's home block, and the
/// largest block beyond a request (<see cref="PerCoreReservationOptions.MaxBlockSize"/> - 1). A limiter's admit path
/// counts its successes on the stripes too (<see cref="CountSuccess"/>), which its statistics add up.
/// </summary>
internal abstract class PerCoreHost : AlgorithmHost, IPerCoreHost, ISuccessCount
{
    private readonly int _mask;

    protected PerCoreHost(PerCoreReservationOptions options)
    {
        Stripes = BlockStripe.Allocate(options);
        _mask = Stripes.Length - 1;
        MaxExtra = options.MaxBlockSize - 1;
    }

    public int StripeCount => Stripes.Length;

    public Func<int>? ChooseStripe { get; set; }

    /// <summary>The blocks, one per core.</summary>
    protected BlockStripe[] Stripes { get; }

    /// <summary>The most permits a block keeps beyond the request that took it.</summary>
    protected long MaxExtra { get; }

    /// <summary>
    /// Made at <paramref name="now"/> over a state that lives elsewhere (a partition key promoted when hot, on a clock that may
    /// have run for long): what the host times from its start counts from then, not from the clock's zero.
    /// </summary>
    public virtual void StartAt(long now)
    {
    }

    /// <summary>The block a request on this thread starts from: its processor's.</summary>
    protected int Home() => (ChooseStripe is null ? Thread.GetCurrentProcessorId() : ChooseStripe()) & _mask;

    /// <summary>Block <paramref name="offset"/> places after <paramref name="home"/>, wrapping around.</summary>
    protected int After(int home, int offset) => (home + offset) & _mask;

    /// <summary>
    /// Counts a successful lease of the limiter on the stripe that served <paramref name="admission"/> (its
    /// <c>Previous</c>): an increment on a line the take just wrote, where a per-thread cell costs a thread-static lookup.
    /// </summary>
    public void CountSuccess(in Admission admission) => Interlocked.Increment(ref Stripes[(int)admission.Previous & _mask].Successes);

    /// <summary>The successes counted on the stripes.</summary>
    public long Read()
    {
        long sum = 0;
        foreach (ref BlockStripe stripe in Stripes.AsSpan())
        {
            sum += Volatile.Read(ref stripe.Successes);
        }

        return sum;
    }
}
