using Microsoft.Extensions.Options;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// Checks <see cref="RateEngineOptions"/> against the registered policies at start and on every reload; each failure names
/// its configuration key.
/// </summary>
internal sealed class RateEngineOptionsValidator<TContext>(RateEnginePolicies<TContext> policies) : IValidateOptions<RateEngineOptions>
{
    private const string Section = RateEngineOptions.SectionName;

    public ValidateOptionsResult Validate(string? name, RateEngineOptions options)
    {
        List<string> failures = [];
        CheckStatus(failures, nameof(RateEngineOptions.RejectedStatusCode), options.RejectedStatusCode);
        CheckStatus(failures, nameof(RateEngineOptions.ServiceWideStatusCode), options.ServiceWideStatusCode);
        if (options.UnknownRetryAfterSeconds < 1)
        {
            failures.Add($"{Section}:{nameof(RateEngineOptions.UnknownRetryAfterSeconds)} must be at least 1 (it is {options.UnknownRetryAfterSeconds}): 0 tells refused clients to retry at once.");
        }

        foreach ((string policyName, RateEnginePolicyOptions policyOptions) in options.Policies)
        {
            string policyKey = $"{Section}:Policies:{policyName}";
            if (!policies.Contains(policyName))
            {
                failures.Add($"{policyKey}: no RateEngine policy named '{policyName}' is registered (registered: {string.Join(", ", policies.Names)}).");
                continue;
            }

            IRatePolicy<TContext> policy = policies[policyName];
            string[] builtTiers = [.. policy.GetTiers().Names];
            foreach ((string tier, Dictionary<string, long> limits) in policyOptions.Tiers)
            {
                // Tier names are ordinal (a request's tier selector returns them), configuration keys are not: "Free" beside a
                // built "free" would be a new tier no request is in, and the limits meant for "free" would silently not apply.
                if (!builtTiers.Contains(tier, StringComparer.Ordinal) && builtTiers.FirstOrDefault(built => string.Equals(built, tier, StringComparison.OrdinalIgnoreCase)) is { } meant)
                {
                    failures.Add($"{policyKey}:Tiers:{tier}: the policy has no tier '{tier}' but has '{meant}' (tier names are case-sensitive).");
                    continue;
                }

                foreach ((string layer, long limit) in limits)
                {
                    CheckLimit(failures, policy, $"{policyKey}:Tiers:{tier}:{layer}", layer, limit);
                }
            }
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void CheckStatus(List<string> failures, string key, int status)
    {
        if (status is < 400 or > 599)
        {
            failures.Add($"{Section}:{key} must be an HTTP error status, 400 to 599 (it is {status}).");
        }
    }

    private static void CheckLimit(List<string> failures, IRatePolicy<TContext> policy, string key, string layer, long limit)
    {
        if (!policy.LayerNames.Contains(layer))
        {
            failures.Add($"{key}: the policy has no layer named '{layer}' (layers: {string.Join(", ", policy.LayerNames)}).");
            return;
        }

        PolicyRule rule = policy.GetRule(layer);
        long most = rule.IsCalendar ? long.MaxValue / 2 : int.MaxValue;
        if (rule.Limit is not null)
        {
            failures.Add($"{key}: layer '{layer}' has a fixed limit ({rule.Limit}), so tiers do not apply to it.");
        }
        else if (limit < 1 || limit > most)
        {
            failures.Add($"{key} must be between 1 and {most} (it is {limit}).");
        }
    }
}
