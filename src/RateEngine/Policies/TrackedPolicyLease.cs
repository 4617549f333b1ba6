using System.Runtime.ExceptionServices;

namespace RateEngine.Policies;

/// <summary>
/// The lease of a policy with concurrency layers: one that is never disposed (a bug in the caller) would hold its slots
/// forever, so when it is collected its finalizer frees them and the policy reports it.
/// </summary>
internal sealed class TrackedPolicyLease<TContext>(RatePolicy<TContext> policy, TContext context, LayerHold[] holds, RequestCost estimate)
    : AcquiredPolicyLease<TContext>(policy, context, holds, estimate)
{
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        GC.SuppressFinalize(this); // its slots are free now: nothing left for the finalizer
    }

    ~TrackedPolicyLease()
    {
        // Unreachable, so no other thread holds it: no lock needed.
        List<string> released = ReleaseSlots();
        if (released.Count > 0 && Policy?.OnAbandoned is { } listeners)
        {
            var abandoned = new AbandonedLease(Estimate, released);

            // Each listener on its own (a combined policy's are its sources'): one that throws does not silence the others,
            // and none is thrown, since an exception on the finalizer thread would end the process (the report is best effort).
            ExceptionDispatchInfo? ignored = null;
            Listeners.InvokeEach(listeners, abandoned, ref ignored);
        }
    }
}
