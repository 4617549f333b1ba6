using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace RateEngine.AspNetCore;

/// <summary>
/// Registers RateEngine's policies for an ASP.NET Core app (<see cref="RateEngineServiceCollectionExtensions.AddRateEngine{TContext}"/>):
/// each becomes a named policy of the in-box rate limiting middleware (<c>RequireRateLimiting(name)</c>,
/// <c>[EnableRateLimiting(name)]</c>), and global ones apply to every request.
/// </summary>
/// <typeparam name="TContext">What the policies key on, made from each request by the registration's context factory.</typeparam>
public sealed class RateEngineBuilder<TContext>
{
    internal RateEngineBuilder(IServiceCollection services) => Services = services;

    /// <summary>The app's services.</summary>
    public IServiceCollection Services { get; }

    internal List<(string Name, Func<IServiceProvider, IRatePolicy<TContext>> Create)> Policies { get; } = [];

    internal List<string> GlobalPolicies { get; } = [];

    internal Func<HttpContext, TContext, RequestCost>? Estimate { get; private set; }

    internal Func<TContext, string?>? Model { get; private set; }

    /// <summary>
    /// Registers a policy under <paramref name="name"/>, built once from the app's services when the middleware starts.
    /// The app owns nothing: the policy is disposed with the app's services.
    /// </summary>
    /// <exception cref="ArgumentException">The name is blank, contains '+', or is registered already.</exception>
    /// <exception cref="ArgumentNullException">The factory is null.</exception>
    public RateEngineBuilder<TContext> AddPolicy(string name, Func<IServiceProvider, IRatePolicy<TContext>> create)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(create);
        if (name.Contains('+', StringComparison.Ordinal))
        {
            throw new ArgumentException("A policy name must not contain '+': combined decisions are named by joining their policies with it.", nameof(name));
        }

        if (Policies.Exists(policy => policy.Name == name))
        {
            throw new ArgumentException($"A RateEngine policy named '{name}' is registered already.", nameof(name));
        }

        Policies.Add((name, create));
        return this;
    }

    /// <summary>
    /// Applies the registered policy <paramref name="name"/> to every request, decided together with the endpoint's own
    /// RateEngine policy in one all-or-nothing step (a refusal by either reserves nothing on the other).
    /// </summary>
    /// <exception cref="ArgumentException">The name is blank or global already.</exception>
    public RateEngineBuilder<TContext> UseGlobalPolicy(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (GlobalPolicies.Contains(name))
        {
            throw new ArgumentException($"Policy '{name}' is global already.", nameof(name));
        }

        GlobalPolicies.Add(name);
        return this;
    }

    /// <summary>
    /// The estimate a request reserves on the weighted layers (tokens, money). Default: nothing (request and concurrency
    /// layers still count each request).
    /// </summary>
    /// <exception cref="ArgumentNullException">The estimate is null.</exception>
    public RateEngineBuilder<TContext> UseEstimate(Func<HttpContext, TContext, RequestCost> estimate)
    {
        Estimate = estimate ?? throw new ArgumentNullException(nameof(estimate));
        return this;
    }

    /// <summary>
    /// The model a request uses, as the <c>gen_ai.request.model</c> tag of the token and cost metrics (never a user or a
    /// key). Default: no model tag. The tag names the first 64 models seen and tags any later one <c>other</c>: a model
    /// read from the request is the client's to choose, and must not grow the app's metric series without bound.
    /// </summary>
    /// <exception cref="ArgumentNullException">The selector is null.</exception>
    public RateEngineBuilder<TContext> UseModel(Func<TContext, string?> model)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        return this;
    }
}
