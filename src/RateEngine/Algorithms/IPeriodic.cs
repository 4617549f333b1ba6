namespace RateEngine.Algorithms;

/// <summary>
/// An algorithm whose charges count in numbered periods (a fixed window's windows, a calendar budget's days or months):
/// what a soft layer reports its thresholds once per.
/// </summary>
internal interface IPeriodic
{
    /// <summary>The period a charge at <paramref name="now"/> counts in: what its <see cref="Admission.Marker"/> holds.</summary>
    long PeriodAt(long now);
}
