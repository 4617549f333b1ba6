using System.Threading.RateLimiting;

namespace RateEngine;

/// <summary>
/// The outcome of <see cref="RatePolicy{TContext}.Acquire(TContext, RequestCost)"/>: a lease over every layer, or a refusal
/// that names the layer that refused.
/// </summary>
/// <remarks>
/// <para>An acquired lease holds the request's estimate on every weighted layer and a slot on every concurrency layer. It ends
/// in exactly one of: <see cref="Reconcile(RequestCost)"/> (the difference is refunded, or the overrun charged), or
/// <see cref="RateLimitLease.Dispose()"/> without a reconcile (the estimate is kept; on layers configured with
/// <see cref="PolicyRule.RefundingUnreconciled"/> the part that step charges did not consume is refunded). Dispose always frees the concurrency slots; dispose after a reconcile.
/// A lease that is never disposed frees its slots when it is collected, and the policy reports it
/// (<see cref="RatePolicyBuilder{TContext}.OnLeaseAbandoned"/>).</para>
/// <para>Thread-safe: a stream's chunks may charge steps from one thread while a disconnect disposes from another.</para>
/// </remarks>
public abstract class PolicyLease : RateLimitLease
{
    /// <summary>The metadata name under which a refusal carries the name of the layer that refused.</summary>
    public static readonly MetadataName<string> BlockingLayerName = MetadataName.Create<string>("BLOCKING_LAYER");

    private protected PolicyLease()
    {
    }

    /// <summary>The first layer that refused (in the policy's decision order), or null for an acquired lease.</summary>
    public abstract string? BlockingLayer { get; }

    /// <summary>A human reason for the refusal ("daily cost cap reached (user cost/day)"), or null for an acquired lease.</summary>
    public abstract string? Reason { get; }

    /// <summary>
    /// The longest delay after which the refusing layers would admit this request; null when none can say, or when one of
    /// them is a full concurrency layer (a slot frees when some lease ends). A Redis policy's hybrid refusal answered from a
    /// cached one counts its block-served layers alone (the per-request layers are not asked).
    /// </summary>
    public abstract TimeSpan? RetryAfter { get; }

    /// <summary>
    /// The longest delay the refusing layers know: <see cref="RetryAfter"/> when they can say; when a full concurrency layer
    /// refused too (so <see cref="RetryAfter"/> is null), the other refusing layers' longest, which a retry waits for as the
    /// usage stands, whatever the slot does (a spent daily budget says midnight); null when none knows. Like <see cref="RetryAfter"/> it
    /// is read from the usage now, which counts leases still open at their estimates: a lease that settles lower, or is
    /// refunded, can free the layer sooner.
    /// </summary>
    public virtual TimeSpan? MinimumRetryAfter => RetryAfter;

    /// <summary>
    /// Whether the refusal stops the whole service (a service-wide layer, or the operator's pause), not only this caller:
    /// HTTP answers 503 for these and 429 for the rest.
    /// </summary>
    public abstract bool IsServiceWide { get; }

    /// <summary>
    /// Whether the refusal holds whatever the usage and the time: the request's cost is above a layer's cap, or its tier has
    /// no limit on a layer. The same request is refused until the policy's limits change, so <see cref="RetryAfter"/> is
    /// null and retrying is pointless (HTTP answers without <c>Retry-After</c>). False for an acquired lease and for every
    /// other refusal.
    /// </summary>
    public virtual bool IsPermanentRefusal => false;

    /// <summary>
    /// Every layer's usage as the decision left it, in the order the layers were added, when the policy reported it with
    /// the decision (a policy on a shared store does, saving a round trip); null otherwise (read the policy's usage).
    /// </summary>
    public IReadOnlyList<LayerUsage>? UsageAtDecision { get; init; }

    /// <summary>The estimate reserved at admission.</summary>
    public abstract RequestCost Estimate { get; }

    /// <summary>What step charges have consumed so far.</summary>
    public abstract RequestCost Consumed { get; }

    /// <summary>
    /// Whether the request's amount is final: the lease was reconciled (even one whose reconcile listener threw after every
    /// layer was settled, or whose settle was sent to its store and the reply lost: that settle is sent again, and applied
    /// once) or disposed. False while it can still be charged or reconciled, for a refusal's lease, which holds nothing to
    /// settle, and for a hybrid Redis lease whose Redis part could not be sent (its Redis layers keep the estimate).
    /// </summary>
    public abstract bool IsSettled { get; }

    /// <summary>
    /// Charges one step of an agent workflow or one chunk of a stream against the reservation. What goes beyond the
    /// estimate is charged as overrun at once, past the caps if need be (it was spent).
    /// </summary>
    /// <remarks>
    /// A time provider that fails on the charge's first clock read fails it before anything is counted, and the step may be
    /// charged again. One that fails on a later read may leave the step counted on some layers or all (a hybrid Redis lease
    /// counts it on every layer, then throws): do not charge it again.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">The step is negative.</exception>
    /// <exception cref="InvalidOperationException">The lease was refused, reconciled or disposed.</exception>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    public abstract void Charge(RequestCost step);

    /// <summary>
    /// Settles the request at its actual cost: less than the estimate refunds the difference (exactly, while the period it
    /// was reserved in lasts); more charges the overrun past the caps if need be, and returns it. The actual is the
    /// request's whole cost, whatever its step charges counted so far (a provider's final usage corrects them: upwards in
    /// full, downwards within the reservation, since what steps charged past the estimate was already counted as an
    /// overrun and is not given back);
    /// to settle at what the steps counted, with a step charged meanwhile on another thread included, call
    /// <see cref="Reconcile()"/>.
    /// </summary>
    /// <returns>The overrun: how much the actual exceeded the estimate, per meter (zero when it did not).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The actual is negative.</exception>
    /// <exception cref="InvalidOperationException">The lease was refused, already reconciled, or disposed.</exception>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    public abstract RequestCost Reconcile(RequestCost actual);

    /// <summary>Settles the request at what its step charges consumed (for a stream cancelled part-way).</summary>
    /// <inheritdoc cref="Reconcile(RequestCost)"/>
    public virtual RequestCost Reconcile() => Reconcile(Consumed);

    /// <summary>
    /// <see cref="Charge"/> without blocking a thread: a lease whose layers live on a server (the Redis policy) settles with
    /// one awaited call; an in-process lease completes at once.
    /// </summary>
    /// <remarks>
    /// An exception from the charge itself, once it was sent (a Redis lease whose blocks' debt could not be carried to the
    /// server), leaves the step counted: charging it again would count it twice.
    /// </remarks>
    /// <inheritdoc cref="Charge" path="/exception"/>
    /// <exception cref="OperationCanceledException">The token was cancelled before the charge was sent.</exception>
    public virtual ValueTask ChargeAsync(RequestCost step, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Charge(step);
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// <see cref="Reconcile()"/> without blocking a thread (see <see cref="ChargeAsync"/>): settles at what the step
    /// charges consumed, read in the same step as the settle, so a chunk charged meanwhile is in it.
    /// </summary>
    /// <inheritdoc cref="Reconcile(RequestCost)" path="/returns|/exception"/>
    /// <exception cref="OperationCanceledException">The token was cancelled before the reconcile was sent.</exception>
    public virtual ValueTask<RequestCost> ReconcileConsumedAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(Reconcile());
    }

    /// <summary><see cref="Reconcile(RequestCost)"/> without blocking a thread (see <see cref="ChargeAsync"/>).</summary>
    /// <inheritdoc cref="Reconcile(RequestCost)" path="/returns|/exception"/>
    /// <exception cref="OperationCanceledException">The token was cancelled before the reconcile was sent.</exception>
    public virtual ValueTask<RequestCost> ReconcileAsync(RequestCost actual, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(Reconcile(actual));
    }
}
