using System.Threading.RateLimiting;

namespace RateEngine.Limiters;

/// <summary>
/// The lease totals <c>GetStatistics</c> reports: one pair per limiter, shared by every limiter that reports as one
/// (the keys of a partitioned limiter). A cell per thread (StripedCounter), so counting never becomes a point of contention;
/// decisions never read it. A limiter's own admit path counts its successes elsewhere, beside the state its CAS just wrote
/// (<see cref="OwnedStateCell{TState}"/>, a per-core block's stripe): those are added in through <c>elsewhere</c>.
/// </summary>
internal sealed class LeaseCounters
{
    private readonly StripedCounter _successful = new();
    private readonly StripedCounter _failed = new();
    private readonly ISuccessCount? _elsewhere;

    /// <param name="elsewhere">
    /// Successes a limiter's admit path counts beside its state: a single limiter's <see cref="OwnedStateCell{TState}"/>,
    /// or per-core blocks' stripes (<see cref="PerCoreHost"/>).
    /// </param>
    public LeaseCounters(ISuccessCount? elsewhere = null)
    {
        _elsewhere = elsewhere;
    }

    public void Succeeded() => _successful.Increment();

    public void Failed() => _failed.Increment();

    /// <summary>Takes back the success or failure counted for a decision that was then discarded and decided again.</summary>
    public void Withdraw(bool succeeded) => (succeeded ? _successful : _failed).Decrement();

    public RateLimiterStatistics Statistics(long availablePermits, long queuedPermits) => new()
    {
        CurrentAvailablePermits = availablePermits,
        CurrentQueuedCount = queuedPermits,
        TotalFailedLeases = _failed.Sum(),
        TotalSuccessfulLeases = _successful.Sum() + (_elsewhere?.Read() ?? 0),
    };
}
