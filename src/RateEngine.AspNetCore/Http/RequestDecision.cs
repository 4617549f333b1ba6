using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using RateEngine.AspNetCore.Telemetry;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// One request's decision: the feature the endpoint settles through. An acquired one lasts until the request ends (it is
/// registered for the request's dispose), whatever the in-box middleware does with the leases it hands out meanwhile:
/// then an unsettled request whose client went away is settled at what it charged, and any other keeps its estimate.
/// </summary>
internal sealed class RequestDecision<TContext> : IRateEngineFeature, IDisposable
{
    private readonly RateEngineRuntime<TContext> _runtime;
    private readonly HttpContext _http;
    private readonly Combination<TContext> _combination;
    private readonly TContext _context;
    private readonly string? _model;
    private readonly HeldLease? _held;

    /// <summary>
    /// <c>RequestAborted</c> as the decision saw it. A request-timeouts middleware ahead of the rate limiter links it to the
    /// timeout, then puts the original token back once the request is over, before the request's end is seen here: without
    /// this copy a stream the timeout cut would read as completed and keep its whole estimate.
    /// </summary>
    private readonly CancellationToken _abortedAtDecision;
    private int _settled;
    private int _ended;

    public RequestDecision(RateEngineRuntime<TContext> runtime, HttpContext http, Combination<TContext> combination, TContext context, PolicyLease lease, string? model)
    {
        _runtime = runtime;
        _http = http;
        _combination = combination;
        _context = context;
        _model = model;
        _abortedAtDecision = http.RequestAborted;
        Lease = lease;
        _held = lease.IsAcquired ? new HeldLease(this) : null;
    }

    public string PolicyName => _combination.Name;

    public PolicyLease Lease { get; }

    public IRatePolicy<TContext> Policy => _combination.Policy;

    /// <summary>
    /// What the in-box middleware holds, on every acquire of this request: the refusal itself, or the acquired decision.
    /// The middleware disposes what it holds mid-request too (when a limiter after ours, an in-box endpoint limiter,
    /// refuses its synchronous attempt, it disposes our lease and then waits on every limiter again; and a pipeline
    /// re-executed for an error page runs the middleware again): each later acquire gets this same decision back, so a
    /// request is decided and charged once, and keeps its reservation and its slots until it ends.
    /// </summary>
    public RateLimitLease InBoxLease() => _held ?? (RateLimitLease)Lease;

    /// <summary>Whether the request has ended (its registered dispose ran).</summary>
    public bool HasEnded => Volatile.Read(ref _ended) != 0;

    /// <summary>The request ended: settles the decision (see <see cref="End"/>).</summary>
    public void Dispose()
    {
        if (_held is not null && Interlocked.Exchange(ref _ended, 1) == 0)
        {
            End();
        }
    }

    /// <summary>
    /// An in-box limiter of the request (its endpoint's) refused it after RateEngine admitted it: the request does not
    /// run, so its estimate comes back on the weighted layers (request-counting layers keep it, as an in-box global
    /// limiter keeps its permit); its slots are freed when the request ends. Not for a pass that re-runs the pipeline for
    /// an error or status page (an app's own global limiter may refuse that pass): the endpoint ran, and the request is
    /// settled as any other when it ends.
    /// </summary>
    public async ValueTask RefusedElsewhereAsync()
    {
        if (Lease.IsAcquired && !Lease.IsSettled && !IsReExecution(_http))
        {
            try
            {
                // Not the request's token: a client gone meanwhile must not cancel the refund of a request that never ran.
                await SettleAsync(RequestCost.None, RateEngineMetrics.RefusedElsewhere, CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // the request is refused already: a settle that fails keeps the estimate (stricter)
            catch (Exception exception) when (exception is not OperationCanceledException)
            {
                Log.SettleFailed(_runtime.Logger, PolicyName, exception);
            }
#pragma warning restore CA1031
        }
    }

    public void Charge(RequestCost step) => Lease.Charge(step);

    /// <summary>Whether this pass of the pipeline re-runs it after the endpoint ran (UseExceptionHandler, UseStatusCodePagesWithReExecute).</summary>
    private static bool IsReExecution(HttpContext http) =>
        http.Features.Get<IExceptionHandlerFeature>() is not null || http.Features.Get<IStatusCodeReExecuteFeature>() is not null;

    public RequestCost Reconcile(RequestCost actual)
    {
        bool settledBefore = Lease.IsSettled;
        try
        {
            RequestCost overrun = Lease.Reconcile(actual);
            Settled(actual, RateEngineMetrics.Reconciled);
            return overrun;
        }
        catch (Exception) when (SettledDespite(settledBefore, actual))
        {
            throw;
        }
    }

    public RequestCost Reconcile()
    {
        // The lease reads what was consumed and settles it in one step: a chunk charged meanwhile is not lost between them.
        bool settledBefore = Lease.IsSettled;
        try
        {
            RequestCost overrun = Lease.Reconcile();
            Settled(Lease.Consumed, RateEngineMetrics.Reconciled);
            return overrun;
        }
        catch (Exception) when (SettledDespite(settledBefore, Lease.Consumed))
        {
            throw;
        }
    }

    public ValueTask<IReadOnlyList<LayerUsage>> GetUsageAsync(CancellationToken cancellationToken = default) =>
        _combination.Policy.GetUsageAsync(_context, cancellationToken);

    public async ValueTask ChargeAsync(RequestCost step, CancellationToken cancellationToken = default) =>
        await Lease.ChargeAsync(step, cancellationToken).ConfigureAwait(false);

    public ValueTask<RequestCost> ReconcileAsync(RequestCost actual, CancellationToken cancellationToken = default) =>
        SettleAsync(actual, RateEngineMetrics.Reconciled, cancellationToken);

    /// <summary>Reconciles the lease at <paramref name="actual"/>, metered as <paramref name="how"/>.</summary>
    private async ValueTask<RequestCost> SettleAsync(RequestCost actual, string how, CancellationToken cancellationToken)
    {
        bool settledBefore = Lease.IsSettled;
        try
        {
            RequestCost overrun = await Lease.ReconcileAsync(actual, cancellationToken).ConfigureAwait(false);
            Settled(actual, how);
            return overrun;
        }
        catch (Exception) when (SettledDespite(settledBefore, actual, how))
        {
            throw;
        }
    }

    /// <summary>
    /// Meters a reconcile that threw after it settled (the lease was open before the call and is settled after it): a
    /// reconcile listener's exception, or a store whose answer was lost (the settle counts on the lease and is sent again).
    /// A reconcile refused before settling, or because another path had settled the lease already, is not metered here.
    /// Never catches.
    /// </summary>
    private bool SettledDespite(bool settledBefore, RequestCost actual, string how = RateEngineMetrics.Reconciled)
    {
        if (!settledBefore && Lease.IsSettled)
        {
            Settled(actual, how);
        }

        return false;
    }

    /// <summary>
    /// The usage the response headers show: best effort, since a policy on a store that stopped answering (the reason a
    /// request may be refused) cannot say; the response then goes out without the usage fields.
    /// </summary>
    public async ValueTask<IReadOnlyList<LayerUsage>> UsageForHeadersAsync(CancellationToken cancellationToken)
    {
        if (Lease.UsageAtDecision is { } reported)
        {
            return reported; // the store said it with the decision: no second call
        }

        try
        {
            return await GetUsageAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception exception) when (exception is not OperationCanceledException and not ObjectDisposedException)
        {
            if (_runtime.LogsUsageFailureNow())
            {
                Log.UsageUnavailable(_runtime.Logger, PolicyName, exception);
            }

            return [];
        }
    }

    public async Task WriteSuccessHeaders()
    {
        if (_http.Response.StatusCode >= StatusCodes.Status400BadRequest)
        {
            return; // not a success: another limiter's refusal (an in-box endpoint limiter's), or the endpoint's error
        }

        // Best effort, and never an error of the response: this runs as it starts (OnStarting), where an exception (the
        // client gone, a policy disposed at shutdown) would turn a good answer into a failed one.
        try
        {
            RateEngineOptions options = _runtime.Options;
            IReadOnlyList<LayerUsage> usage = await UsageForHeadersAsync(_http.RequestAborted).ConfigureAwait(false);
            if (options.RateLimitFieldsOnSuccess)
            {
                RateLimitHeaders.WriteIetf(_http.Response.Headers, Policy, usage, blockingLayer: null);
            }

            if (options.OpenAiHeaders)
            {
                RateLimitHeaders.WriteOpenAi(_http.Response.Headers, Policy, usage);
            }
        }
        catch (Exception exception) when (exception is OperationCanceledException or ObjectDisposedException)
        {
            // The client went away, or the policy is gone: the headers go out without the usage fields.
        }
    }

    /// <summary>The request is over.</summary>
    private void End()
    {
        // The client went away mid-work (an abandoned stream), or a request timeout cut it: it pays for what was produced,
        // not for its estimate. Only a
        // request that charged steps says what it produced: one that charged none (an endpoint that works on its estimate)
        // keeps the estimate, or a client that resets the connection once it has the answer would be refunded all of it.
        bool cut = _http.RequestAborted.IsCancellationRequested || _abortedAtDecision.IsCancellationRequested; // a client gone, or a timeout
        if (Volatile.Read(ref _settled) == 0 && !Lease.IsSettled && cut && Lease.Consumed != RequestCost.None)
        {
            // Without blocking the middleware's thread: a policy on a store settles with a round trip. The lease ends once
            // the settle is done (a dispose first would refund the estimate the settle is about to correct).
            _ = SettleOnAbortAsync();
            return;
        }

        try
        {
            Settled(KeptCost(), RateEngineMetrics.EstimateKept);
        }
        finally
        {
            DisposeLease(); // whatever a metrics listener throws: the request's slots come back with it
        }
    }

    private async Task SettleOnAbortAsync()
    {
        try
        {
            // What was consumed is read in the settle's own step: a chunk charged meanwhile (by work the endpoint left
            // running) is in it.
            await Lease.ReconcileConsumedAsync().ConfigureAwait(false);
            RequestCost consumed = Lease.Consumed;
            Settled(consumed, RateEngineMetrics.SettledOnAbort);
            Log.SettledOnAbort(_runtime.Logger, PolicyName, consumed.Tokens, consumed.Money);
        }
#pragma warning disable CA1031 // the request is over: nothing else may fail for it
        catch (Exception exception)
        {
            if (Lease.IsSettled)
            {
                // Settled, then a reconcile listener threw or the store's reply was lost (the settle is sent again); or the
                // endpoint's own reconcile came first.
                Settled(Lease.Consumed, RateEngineMetrics.SettledOnAbort);
            }
            else
            {
                // The store did not answer: the estimate stays counted (stricter), and the log says so.
                Log.SettleFailed(_runtime.Logger, PolicyName, exception);
            }
        }
        finally
        {
            try
            {
                Settled(KeptCost(), RateEngineMetrics.EstimateKept); // unless settled above or by the endpoint
            }
            catch (Exception exception)
            {
                Log.SettleFailed(_runtime.Logger, PolicyName, exception);
            }
            finally
            {
                DisposeLease(); // whatever a metrics listener threw above: the request's slots come back
            }
        }
#pragma warning restore CA1031
    }

    private void DisposeLease()
    {
        try
        {
            Lease.Dispose();
        }
#pragma warning disable CA1031 // the request is over: nothing else may fail for it
        catch (Exception exception)
#pragma warning restore CA1031
        {
            Log.SettleFailed(_runtime.Logger, PolicyName, exception);
        }
    }

    /// <summary>
    /// What a lease that ends unreconciled counts, per meter: the estimate, or what its steps charged past it (overruns
    /// counted), where a layer of that meter keeps its estimate; only what the steps consumed where every layer of that
    /// meter gives the rest back (<see cref="PolicyRule.RefundingUnreconciled"/>).
    /// </summary>
    private RequestCost KeptCost()
    {
        RequestCost estimate = Lease.Estimate;
        RequestCost consumed = Lease.Consumed;
        return new RequestCost(
            _combination.KeepsTokenEstimate ? Math.Max(estimate.Tokens, consumed.Tokens) : consumed.Tokens,
            _combination.KeepsMoneyEstimate ? Math.Max(estimate.Money, consumed.Money) : consumed.Money);
    }

    private void Settled(RequestCost counted, string how)
    {
        if (Interlocked.Exchange(ref _settled, 1) == 0)
        {
            _runtime.Metrics.Settled(PolicyName, _model, counted, how);
        }
    }

    /// <summary>
    /// The acquired decision as the in-box middleware sees it. Disposing it ends nothing: the decision ends with the
    /// request (see <see cref="InBoxLease"/>).
    /// </summary>
    private sealed class HeldLease(RequestDecision<TContext> decision) : RateLimitLease
    {
        public override bool IsAcquired => true;

        public override IEnumerable<string> MetadataNames => decision.Lease.MetadataNames;

        public override bool TryGetMetadata(string metadataName, out object? metadata) => decision.Lease.TryGetMetadata(metadataName, out metadata);

        protected override void Dispose(bool disposing)
        {
        }
    }
}
