namespace RateEngine.Algorithms;

/// <summary>
/// One key's usage in one calendar period (<see cref="CalendarBudget"/>). The period and its bounds never change; a new
/// period gets a new object, installed by CAS, so the count of a period can only ever be added to while it is current.
/// </summary>
internal sealed class BudgetPeriodState(long period, long start, long end)
{
    /// <summary>A key that has counted nothing yet: older than every period.</summary>
    public static readonly BudgetPeriodState Fresh = new(long.MinValue, long.MinValue, long.MinValue);

    public readonly long Period = period;

    public readonly long Start = start;

    public readonly long End = end;

    /// <summary>What the period has counted: admissions, overrun charges, less refunds.</summary>
    public long Used;
}
