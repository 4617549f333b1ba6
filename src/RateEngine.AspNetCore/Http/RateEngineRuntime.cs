using System.Collections.Concurrent;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RateEngine.AspNetCore.Telemetry;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// Decides requests: finds which registered policies apply (the global ones and the endpoint's), decides them as one
/// combined policy, and keeps the decision on the request so every later acquire of the same request sees it.
/// </summary>
internal sealed class RateEngineRuntime<TContext> : IDisposable
{
    private readonly RateEngineBuilder<TContext> _registration;
    private readonly Func<HttpContext, ValueTask<TContext>> _context;
    private readonly RateEnginePolicies<TContext> _policies;
    private readonly IOptionsMonitor<RateEngineOptions> _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private long _lastUsageFailureLogged;
    private readonly IDisposable? _reloads;

    /// <summary>
    /// The options last seen valid. A reload that fails validation makes the monitor's <c>CurrentValue</c> throw on every
    /// read (it is not cached); requests keep the options in force instead, as the tiers do, and the failure is logged.
    /// </summary>
    private RateEngineOptions _current;

    /// <summary>Per policy, the configured tiers applied last (<see cref="TierOverrides.Describe"/>); also the reloads' lock.</summary>
    private readonly Dictionary<string, string> _appliedOverrides = new(StringComparer.Ordinal);

    // One combination per distinct endpoint policy ("" for none): a handful, built once each.
    private readonly ConcurrentDictionary<string, Combination<TContext>?> _combinations = new(StringComparer.Ordinal);

    public RateEngineRuntime(
        Func<HttpContext, ValueTask<TContext>> context,
        RateEngineBuilder<TContext> registration,
        RateEnginePolicies<TContext> policies,
        IOptionsMonitor<RateEngineOptions> options,
        RateEngineMetrics metrics,
        ILoggerFactory loggers,
        TimeProvider time)
    {
        _context = context;
        _registration = registration;
        _policies = policies;
        _options = options;
        Metrics = metrics;
        _logger = loggers.CreateLogger("RateEngine.AspNetCore");
        _time = time;
        _current = options.CurrentValue;
        ApplyTiers(_current, initial: true);

        // Every combination a request can need, built now (the in-box middleware, built at start, makes this runtime):
        // policies that cannot be decided together fail the app's start, not every request to one endpoint.
        foreach (string own in (string[])[string.Empty, .. policies.Names.Where(name => !policies.GlobalNames.Contains(name))])
        {
            _combinations[own] = Combine(own);
        }

        _reloads = options.OnChange(changed => ApplyTiers(changed, initial: false));
    }

    public RateEngineMetrics Metrics { get; }

    public RateEngineOptions Options => Volatile.Read(ref _current);

    public ILogger Logger => _logger;

    /// <summary>
    /// Whether a failed usage read for the headers is logged now: at most once a minute, since while a store is away
    /// (a fail-open policy admitting) every response would log one.
    /// </summary>
    public bool LogsUsageFailureNow()
    {
        long now = _time.GetTimestamp();
        long last = Volatile.Read(ref _lastUsageFailureLogged);
        return (last == 0 || _time.GetElapsedTime(last, now) >= TimeSpan.FromMinutes(1))
            && Interlocked.CompareExchange(ref _lastUsageFailureLogged, now, last) == last;
    }

    public RateEnginePolicies<TContext> Policies => _policies;

    /// <summary>The in-box acquire, synchronous: decides now unless the request's context needs to wait (the body).</summary>
    public RateLimitLease AttemptAcquire(HttpContext http)
    {
        if (http.Features.Get<IRateEngineFeature>() is RequestDecision<TContext> { HasEnded: false } decided)
        {
            return decided.InBoxLease();
        }

        if (CombinationFor(http) is not { } combination || http.Features.Get<FailedDecision>() is not null)
        {
            return NoPolicyLease.Instance;
        }

        try
        {
            return Attempt(http, combination);
        }
        catch (Exception) when (Failed(http))
        {
            throw;
        }
    }

    private RateLimitLease Attempt(HttpContext http, Combination<TContext> combination)
    {
        ValueTask<TContext> context = _context(http);
        if (!context.IsCompleted)
        {
            // The middleware goes on to AcquireAsync after a failed attempt: the request is decided there, once.
            http.Features.Set(new PendingContext(context.AsTask()));
            return PendingLease.Instance;
        }

        TContext ready = context.GetAwaiter().GetResult();
        long started = _time.GetTimestamp();
        RequestCost estimate = _registration.Estimate?.Invoke(http, ready) ?? RequestCost.None;
        string? model = _registration.Model?.Invoke(ready); // user code, before anything is acquired
        if (!combination.Policy.TryAcquire(ready, estimate, out PolicyLease? lease))
        {
            // A policy on a shared store decides with a round trip: AcquireAsync does, with the context, the estimate and
            // the model already read (the app's code runs once per request).
            http.Features.Set(new PendingContext(Task.FromResult(ready)) { Estimated = (estimate, model) });
            return PendingLease.Instance;
        }

        return Record(http, combination, ready, model, lease, started);
    }

    /// <summary>The in-box acquire, asynchronous: awaits the request's context when it was not ready.</summary>
    public async ValueTask<RateLimitLease> AcquireAsync(HttpContext http, CancellationToken cancellationToken)
    {
        if (http.Features.Get<IRateEngineFeature>() is RequestDecision<TContext> { HasEnded: false } decided)
        {
            return decided.InBoxLease();
        }

        if (CombinationFor(http) is not { } combination || http.Features.Get<FailedDecision>() is not null)
        {
            return NoPolicyLease.Instance;
        }

        try
        {
            return await Acquire(http, combination, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested && TimedOutLease.TimedOut(http))
        {
            return TimedOutLease.Instance; // thrown again from the rejection path, for the timeouts middleware to answer
        }
        catch (Exception error) when (!(error is OperationCanceledException && cancellationToken.IsCancellationRequested) && Failed(http))
        {
            throw;
        }
    }

    /// <summary>
    /// Notes on the request that deciding it threw (a selector's bug, a store's script error), and lets the exception go on:
    /// a pass of the pipeline re-executed for an error page then runs without deciding again, which would throw again and
    /// lose the error page. Always false, so the exception is not caught.
    /// </summary>
    private static bool Failed(HttpContext http)
    {
        http.Features.Set(FailedDecision.Instance);
        return false;
    }

    private async ValueTask<RateLimitLease> Acquire(HttpContext http, Combination<TContext> combination, CancellationToken cancellationToken)
    {
        PendingContext? attempted = http.Features.Get<PendingContext>();
        Task<TContext> pending = attempted?.Context ?? _context(http).AsTask();
        http.Features.Set<PendingContext?>(null);
        TContext context = await pending.WaitAsync(cancellationToken).ConfigureAwait(false);
        long started = _time.GetTimestamp();
        (RequestCost estimate, string? model) = attempted?.Estimated
            ?? (_registration.Estimate?.Invoke(http, context) ?? RequestCost.None, _registration.Model?.Invoke(context)); // user code, before anything is acquired
        PolicyLease lease = await combination.Policy.AcquireAsync(context, estimate, cancellationToken).ConfigureAwait(false);
        return Record(http, combination, context, model, lease, started);
    }

    /// <summary>Keeps the decision on the request (every later acquire of it sees it) until it ends, meters and logs it.</summary>
    private RateLimitLease Record(HttpContext http, Combination<TContext> combination, TContext context, string? model, PolicyLease lease, long started)
    {
        var decision = new RequestDecision<TContext>(this, http, combination, context, lease, model);
        http.Features.Set<IRateEngineFeature>(decision);
        if (lease.IsAcquired)
        {
            // First: whatever throws below (a metrics listener), the decision still ends with the request.
            http.Response.RegisterForDispose(decision);
        }

        Metrics.Decided(combination.Name, lease, _time.GetElapsedTime(started));
        if (!lease.IsAcquired)
        {
            Log.RequestRejected(_logger, combination.Name, lease.BlockingLayer ?? string.Empty, lease.Reason ?? string.Empty, lease.IsServiceWide);
        }
        else if ((Options.RateLimitFieldsOnSuccess || Options.OpenAiHeaders) && !http.Response.HasStarted)
        {
            http.Response.OnStarting(static state => ((RequestDecision<TContext>)state).WriteSuccessHeaders(), decision);
        }

        return decision.InBoxLease();
    }

    /// <summary>The combined policy of the request's global policies and its endpoint's RateEngine policy; null when none applies.</summary>
    private Combination<TContext>? CombinationFor(HttpContext http)
    {
        Endpoint? endpoint = http.GetEndpoint();
        if (endpoint?.Metadata.GetMetadata<DisableRateLimitingAttribute>() is not null)
        {
            return null;
        }

        string? named = endpoint?.Metadata.GetMetadata<EnableRateLimitingAttribute>()?.PolicyName;
        string own = named is not null && _policies.Contains(named) && !_policies.GlobalNames.Contains(named) ? named : string.Empty;
        return _combinations.GetOrAdd(own, static (own, runtime) => runtime.Combine(own), this);
    }

    private Combination<TContext>? Combine(string own)
    {
        string[] names = [.. _policies.GlobalNames, .. own.Length > 0 ? [own] : Array.Empty<string>()];
        if (names.Length == 0)
        {
            return null;
        }

        try
        {
            IRatePolicy<TContext> policy = names.Length == 1 ? _policies[names[0]] : _policies[names[0]].Combine([.. names.Skip(1).Select(name => _policies[name])]);
            return new Combination<TContext>(string.Join('+', names), policy);
        }
        catch (ArgumentException exception)
        {
            // Two layers of one name, policies on different clocks, or an in-process policy beside one on Redis.
            throw new InvalidOperationException(
                $"RateEngine cannot decide the policies {string.Join(" + ", names.Select(name => $"'{name}'"))} together (the global ones and an endpoint's): {exception.Message}",
                exception);
        }
    }

    /// <summary>
    /// Lays each policy's configured tiers over the ones it was built with. On a reload, only the policies whose section
    /// changed: a reload fires for any change of the configuration (a logging level, a vault's periodic refresh), and
    /// re-applying every policy would undo the limits the app set at run time with <c>UpdateTiers</c>. All or none: a
    /// policy that refuses its tiers puts the ones updated before it back.
    /// </summary>
    private void ApplyTiers(RateEngineOptions options, bool initial)
    {
        lock (_appliedOverrides)
        {
            var updated = new List<(string Name, string Overrides, PolicyTiers Before)>();
            try
            {
                foreach (string name in _policies.Names)
                {
                    RateEnginePolicyOptions? configured = options.Policies.GetValueOrDefault(name);
                    string overrides = TierOverrides.Describe(configured);
                    if (!initial && _appliedOverrides.GetValueOrDefault(name) == overrides)
                    {
                        continue;
                    }

                    PolicyTiers before = _policies[name].GetTiers();
                    _policies[name].UpdateTiers(TierOverrides.Apply(_policies.BaseTiers[name], configured));
                    updated.Add((name, overrides, before));
                }

                foreach ((string name, string overrides, _) in updated)
                {
                    _appliedOverrides[name] = overrides;
                }

                if (!initial)
                {
                    Volatile.Write(ref _current, options);
                    if (updated.Count > 0)
                    {
                        Log.TiersReloaded(_logger, updated.Count);
                    }
                }
            }
#pragma warning disable CA1031 // a bad reload must not take the app down: the tiers in force stay, and the error is logged
            catch (Exception exception) when (!initial)
#pragma warning restore CA1031
            {
                foreach ((string name, _, PolicyTiers before) in updated)
                {
                    try
                    {
                        _policies[name].UpdateTiers(before); // accepted a moment ago: it accepts them again
                    }
                    catch (ObjectDisposedException)
                    {
                        // disposed (the app is stopping): nothing decides by its tiers any more; the others still go back
                    }
                }

                Log.TiersReloadFailed(_logger, exception);
            }
        }
    }

    public void Dispose() => _reloads?.Dispose();

    /// <summary>A context factory still reading the request (the body), started by the synchronous acquire.</summary>
    /// <summary>
    /// A request the synchronous attempt left to <see cref="AcquireAsync"/>: its context, and what the attempt already read
    /// of it (null when the context was not ready then).
    /// </summary>
    private sealed record PendingContext(Task<TContext> Context)
    {
        public (RequestCost Estimate, string? Model)? Estimated { get; init; }
    }

    /// <summary>Whether deciding the request threw: a pass re-executed for its error page runs without a decision.</summary>
    public static bool DecisionFailed(HttpContext http) => http.Features.Get<FailedDecision>() is not null;

    /// <summary>Marks a request whose decision threw (see <see cref="Failed"/>).</summary>
    private sealed class FailedDecision
    {
        public static readonly FailedDecision Instance = new();
    }
}
