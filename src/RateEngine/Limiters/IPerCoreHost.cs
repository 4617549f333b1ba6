namespace RateEngine.Limiters;

/// <summary>
/// A host that hands permits out from per-core blocks. For tests: which block a thread takes from is the current
/// processor's, which a test cannot steer; <see cref="ChooseStripe"/> replaces that choice, so a single-threaded property
/// can visit every block in any order.
/// </summary>
internal interface IPerCoreHost
{
    /// <summary>The number of blocks.</summary>
    int StripeCount { get; }

    /// <summary>When set, the block a request starts from (taken modulo <see cref="StripeCount"/>) instead of the processor's.</summary>
    Func<int>? ChooseStripe { get; set; }
}
