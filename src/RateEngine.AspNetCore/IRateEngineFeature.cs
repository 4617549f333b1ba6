namespace RateEngine.AspNetCore;

/// <summary>
/// The request's RateEngine decision, on <see cref="Microsoft.AspNetCore.Http.HttpContext.Features"/> once the rate
/// limiting middleware has run: the endpoint settles the actual cost through it after the work.
/// </summary>
/// <remarks>
/// <para>When the request ends without a reconcile, a request whose client went away (an abandoned stream) is settled at
/// what <see cref="Charge"/> counted; any other keeps its estimate, as <see cref="PolicyLease"/> does.</para>
/// <para>Settle through this feature rather than on <see cref="Lease"/> directly, so that the token and cost metrics
/// see the actual amounts.</para>
/// </remarks>
public interface IRateEngineFeature
{
    /// <summary>The policies decided together for this request, joined with '+' (the global ones first).</summary>
    string PolicyName { get; }

    /// <summary>The lease: acquired, or the refusal naming its layer.</summary>
    PolicyLease Lease { get; }

    /// <summary>Charges one step or streamed chunk (<see cref="PolicyLease.Charge"/>).</summary>
    void Charge(RequestCost step);

    /// <summary>Settles at the actual cost (<see cref="PolicyLease.Reconcile(RequestCost)"/>); returns the overrun.</summary>
    /// <remarks>On a policy whose state lives on a store (Redis) this blocks the request's thread for the round trip, up to
    /// the store's sync timeout: an endpoint should await <see cref="ReconcileAsync"/> instead.</remarks>
    RequestCost Reconcile(RequestCost actual);

    /// <summary>Settles at what the step charges counted (<see cref="PolicyLease.Reconcile()"/>).</summary>
    /// <remarks>Blocks for a store's round trip, as <see cref="Reconcile(RequestCost)"/> does.</remarks>
    RequestCost Reconcile();

    /// <summary>Charges one step or streamed chunk without blocking a thread (<see cref="PolicyLease.ChargeAsync"/>).</summary>
    ValueTask ChargeAsync(RequestCost step, CancellationToken cancellationToken = default);

    /// <summary>Settles at the actual cost without blocking a thread (<see cref="PolicyLease.ReconcileAsync"/>); returns the overrun.</summary>
    ValueTask<RequestCost> ReconcileAsync(RequestCost actual, CancellationToken cancellationToken = default);

    /// <summary>
    /// Another limiter refused the request after RateEngine admitted it (an in-box policy's own <c>OnRejected</c>, which
    /// replaces the one RateEngine registers): the request does not run, so its estimate comes back on the weighted layers
    /// (request-counting layers keep it); its slots are freed when the request ends. Nothing on a pass that re-runs the
    /// pipeline for an error or status page (the endpoint ran), nor once the lease is settled. A settle the store does
    /// not answer keeps the estimate (stricter) and is logged, as is a reconcile listener that throws after it settled.
    /// </summary>
    ValueTask RefusedElsewhereAsync();

    /// <summary>Every layer's usage for this request's keys, without consuming anything (a round trip for a policy on Redis).</summary>
    ValueTask<IReadOnlyList<LayerUsage>> GetUsageAsync(CancellationToken cancellationToken = default);
}
