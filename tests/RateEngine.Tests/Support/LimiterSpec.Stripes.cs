namespace RateEngine.Tests.Support;

/// <summary>The part of <see cref="LimiterSpec"/> that needs RateEngine's internals (this project sees them).</summary>
public sealed partial record LimiterSpec
{
    static partial void SetStripes(PerCoreReservationOptions options, int stripes)
    {
        if (stripes > 0)
        {
            options.Stripes = stripes;
        }
    }
}
