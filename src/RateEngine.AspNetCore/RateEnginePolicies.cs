namespace RateEngine.AspNetCore;

/// <summary>
/// The app's registered RateEngine policies, by name (a singleton service): for an operator's pause switch, a usage
/// endpoint, or anything else that needs the live policy.
/// </summary>
/// <typeparam name="TContext">The registration's context type.</typeparam>
public sealed class RateEnginePolicies<TContext> : IDisposable
{
    private readonly Dictionary<string, IRatePolicy<TContext>> _policies;

    internal RateEnginePolicies(IServiceProvider services, RateEngineBuilder<TContext> registration)
    {
        _policies = new Dictionary<string, IRatePolicy<TContext>>(StringComparer.Ordinal);
        foreach ((string name, Func<IServiceProvider, IRatePolicy<TContext>> create) in registration.Policies)
        {
            _policies[name] = create(services) ?? throw new InvalidOperationException($"The factory of RateEngine policy '{name}' returned null.");
        }

        Names = [.. registration.Policies.Select(policy => policy.Name)];
        GlobalNames = [.. registration.GlobalPolicies];
        foreach (string global in GlobalNames)
        {
            if (!_policies.ContainsKey(global))
            {
                throw new InvalidOperationException($"UseGlobalPolicy names '{global}', but no RateEngine policy of that name is registered.");
            }
        }

        // Base tiers: what configuration overrides on every reload.
        BaseTiers = _policies.ToDictionary(pair => pair.Key, pair => pair.Value.GetTiers(), StringComparer.Ordinal);
    }

    /// <summary>The registered names, in registration order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The policies that apply to every request.</summary>
    public IReadOnlyList<string> GlobalNames { get; }

    internal IReadOnlyDictionary<string, PolicyTiers> BaseTiers { get; }

    /// <summary>The policy registered as <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No policy of that name is registered.</exception>
    public IRatePolicy<TContext> this[string name] =>
        _policies.TryGetValue(name, out IRatePolicy<TContext>? policy) ? policy : throw new KeyNotFoundException($"No RateEngine policy named '{name}' is registered.");

    /// <summary>Whether a policy of that name is registered.</summary>
    public bool Contains(string name) => _policies.ContainsKey(name);

    /// <summary>Disposes every policy (the app's services do, on shutdown).</summary>
    public void Dispose()
    {
        foreach (IRatePolicy<TContext> policy in _policies.Values)
        {
            policy.Dispose();
        }
    }
}
