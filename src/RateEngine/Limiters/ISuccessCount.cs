namespace RateEngine.Limiters;

/// <summary>Successful leases counted outside <see cref="LeaseCounters"/>, which adds them to its own total.</summary>
internal interface ISuccessCount
{
    long Read();
}
