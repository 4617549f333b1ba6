namespace RateEngine.Algorithms;

/// <summary>
/// An algorithm whose charges count in numbered periods (a fixed window's windows, a calendar budget's days or months):
/// what a soft layer reports its thresholds once per.
/// </summary>
internal interface IPeriodic
{
    /// <summary>The period a charge at <paramref name="now"/> counts in: what its <see cref="Admission.Marker"/> holds.</summary>
    long PeriodAt(long now);

    /// <summary>
    /// What the period of <paramref name="admission"/> counted right after it: its own measure of the key's usage, which a
    /// later admission in the next period (another thread's, racing it) cannot replace, as a read of the state could.
    /// </summary>
    long UsedAfter(in Admission admission);
}
