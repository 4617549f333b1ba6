using System.Diagnostics.CodeAnalysis;

namespace RateEngine;

/// <summary>
/// A layered rate and budget policy wherever its state lives: in process (<see cref="RatePolicy{TContext}"/>) or on a
/// store shared by many nodes (RateEngine.Redis's <c>RedisRatePolicy</c>). What the ASP.NET Core integration, a usage
/// endpoint or an operator's switch need, whichever kind the app registers.
/// </summary>
/// <typeparam name="TContext">What the application knows about a request.</typeparam>
public interface IRatePolicy<TContext> : IDisposable
{
    /// <summary>The layers' names, in the order they were added.</summary>
    IReadOnlyList<string> LayerNames { get; }

    /// <summary>Whether the operator's pause is on, as far as this node knows.</summary>
    bool IsPaused { get; }

    /// <summary>The rule of the layer named <paramref name="layer"/>.</summary>
    /// <exception cref="ArgumentException">The policy has no layer of that name.</exception>
    PolicyRule GetRule(string layer);

    /// <summary>Every tier's limit of every tiered layer (a copy).</summary>
    PolicyTiers GetTiers();

    /// <summary>Replaces the tiers' limits from the next decision on, keeping the usage already counted.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="tiers"/> is null.</exception>
    /// <exception cref="ArgumentException">A tier names a layer the policy lacks, or sets a limit the layer cannot take.</exception>
    void UpdateTiers(PolicyTiers tiers);

    /// <summary>The operator's switch: every request is refused, service-wide, with <paramref name="reason"/>, until <see cref="Resume"/>.</summary>
    /// <exception cref="ArgumentException">The reason is blank.</exception>
    void Pause(string reason);

    /// <summary>Ends the operator's pause.</summary>
    void Resume();

    /// <summary>
    /// <see cref="Pause"/> without blocking the caller's thread: a policy on a store writes the switch with a round trip
    /// (an in-process policy completes at once).
    /// </summary>
    /// <exception cref="ArgumentException">The reason is blank.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled: before the call, nothing was
    /// written; while a store's write was on its way, the switch may be written all the same (this node learns it at its next read).</exception>
    ValueTask PauseAsync(string reason, CancellationToken cancellationToken = default);

    /// <summary><see cref="Resume"/> without blocking the caller's thread.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (as for <see cref="PauseAsync"/>).</exception>
    ValueTask ResumeAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Decides the request now when that needs no I/O (an in-process policy always can): true with the lease, acquired or
    /// refused. False when the decision needs a round trip: call <see cref="AcquireAsync"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The estimate is negative.</exception>
    /// <exception cref="InvalidOperationException">A key selector returned null.</exception>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    bool TryAcquire(TContext context, RequestCost estimate, [NotNullWhen(true)] out PolicyLease? lease);

    /// <summary>Reserves <paramref name="estimate"/> on every weighted layer and one request on every other layer, all or nothing.</summary>
    /// <returns>An acquired lease to reconcile and dispose, or a refusal naming the layer.</returns>
    /// <inheritdoc cref="TryAcquire" path="/exception"/>
    ValueTask<PolicyLease> AcquireAsync(TContext context, RequestCost estimate, CancellationToken cancellationToken = default);

    /// <summary>Every layer's usage for the request's keys, without consuming anything, in the order the layers were added.</summary>
    /// <exception cref="ObjectDisposedException">The policy was disposed.</exception>
    ValueTask<IReadOnlyList<LayerUsage>> GetUsageAsync(TContext context, CancellationToken cancellationToken = default);

    /// <summary>
    /// One policy that decides this policy's layers and then <paramref name="others"/>' together, all or nothing (for
    /// example a service-wide policy plus an endpoint's own). It shares their state and owns nothing.
    /// </summary>
    /// <exception cref="ArgumentException">A policy is of another kind or store, or two layers share a name.</exception>
    IRatePolicy<TContext> Combine(IReadOnlyList<IRatePolicy<TContext>> others);
}
