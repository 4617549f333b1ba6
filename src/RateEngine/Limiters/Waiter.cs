using System.Threading.RateLimiting;

namespace RateEngine.Limiters;

/// <summary>
/// A request waiting in a limiter's queue: its task, its permit count, its cancellation registration, and its links in
/// the <see cref="WaiterQueue"/> (threaded through the waiters, so that queueing allocates no list node).
/// </summary>
internal sealed class Waiter(RateEngineLimiter owner, int count)
    : TaskCompletionSource<RateLimitLease>(TaskCreationOptions.RunContinuationsAsynchronously)
{
    public RateEngineLimiter Owner { get; } = owner;

    public int Count { get; } = count;

    public CancellationTokenRegistration Registration { get; set; }

    public Waiter? Previous;
    public Waiter? Next;
    public bool Queued;
}
