namespace RateEngine.Limiters;

/// <summary>
/// What the per-core hosts share: one <see cref="BlockStripe"/> per core, the choice of a request's home block, and the
/// largest block beyond a request (<see cref="PerCoreReservationOptions.MaxBlockSize"/> - 1).
/// </summary>
internal abstract class PerCoreHost : AlgorithmHost, IPerCoreHost
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

    /// <summary>The block a request on this thread starts from: its processor's.</summary>
    protected int Home() => (ChooseStripe is null ? Thread.GetCurrentProcessorId() : ChooseStripe()) & _mask;

    /// <summary>Block <paramref name="offset"/> places after <paramref name="home"/>, wrapping around.</summary>
    protected int After(int home, int offset) => (home + offset) & _mask;
}
