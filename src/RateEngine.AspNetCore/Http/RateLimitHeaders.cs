using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// Writes a request's layers as response fields: the IETF <c>RateLimit-Policy</c> and <c>RateLimit</c> fields
/// (draft-ietf-httpapi-ratelimit-headers, Structured Field lists), and the OpenAI-style <c>x-ratelimit-*</c> set.
/// </summary>
/// <remarks>
/// The IETF fields carry the layers that count requests (quota unit <c>requests</c>, the default) and the concurrency
/// layers (<c>concurrent-requests</c>), never a service-wide one: the draft's registry has no unit for tokens or money, so token and cost budgets
/// show in the OpenAI-style set (<c>-tokens</c>, and <c>-cost</c> in the money meter's units) and in the problem body
/// instead; a service-wide layer's usage shows in neither. Soft layers never refuse, so they are not quotas.
/// Partition keys (<c>pk</c>) are never sent: they would disclose a user's or an address's key.
/// </remarks>
internal static class RateLimitHeaders
{
    /// <summary>The largest integer a Structured Field may carry (15 digits).</summary>
    private const long MaxSfInteger = 999_999_999_999_999;

    public static void WriteIetf<TContext>(IHeaderDictionary headers, IRatePolicy<TContext> policy, IReadOnlyList<LayerUsage> usage, string? blockingLayer)
    {
        var policies = new StringBuilder();
        var current = new StringBuilder();
        foreach (LayerUsage layer in Ordered(usage, blockingLayer))
        {
            PolicyRule rule = policy.GetRule(layer.Layer);
            if (rule.Meter != PolicyMeter.Requests || rule.SoftThresholds.Count > 0 || rule.IsServiceWide || layer.Limit == long.MaxValue)
            {
                continue; // a service-wide layer's remaining count is the whole service's traffic, no customer's business
            }

            Separate(policies).Append(SfString(layer.Layer)).Append(";q=").Append(SfInteger(layer.Limit));
            Separate(current).Append(SfString(layer.Layer)).Append(";r=").Append(SfInteger(layer.Remaining));
            if (rule.IsConcurrency)
            {
                policies.Append(";qu=\"concurrent-requests\"");
                continue;
            }

            if (!rule.IsCalendar && rule.TokensPerPeriod == 0)
            {
                policies.Append(";w=").Append(SfInteger(Seconds(rule.Window)));
            }

            current.Append(";t=").Append(SfInteger(Seconds(layer.ResetAfter)));
        }

        if (policies.Length > 0)
        {
            headers["RateLimit-Policy"] = policies.ToString();
            headers["RateLimit"] = current.ToString();
        }
    }

    public static void WriteOpenAi<TContext>(IHeaderDictionary headers, IRatePolicy<TContext> policy, IReadOnlyList<LayerUsage> usage)
    {
        WriteTightest(headers, policy, usage, PolicyMeter.Requests, "requests");
        WriteTightest(headers, policy, usage, PolicyMeter.Tokens, "tokens");
        WriteTightest(headers, policy, usage, PolicyMeter.Money, "cost"); // a daily cost cap is what binds a small tier first
    }

    /// <summary>Whole seconds, rounded up: waiting that long is enough.</summary>
    public static long Seconds(TimeSpan span) => span <= TimeSpan.Zero ? 0 : (long)Math.Ceiling(span.TotalSeconds);

    // The layer with the least left decides what a client can send next. Not a service-wide layer: what is left of it is the
    // whole service's spend, no customer's business (its refusal still says which layer refused).
    private static void WriteTightest<TContext>(IHeaderDictionary headers, IRatePolicy<TContext> policy, IReadOnlyList<LayerUsage> usage, PolicyMeter meter, string unit)
    {
        LayerUsage? tightest = null;
        foreach (LayerUsage layer in usage)
        {
            PolicyRule rule = policy.GetRule(layer.Layer);
            if (rule.Meter == meter && !rule.IsConcurrency && !rule.IsServiceWide && rule.SoftThresholds.Count == 0 && layer.Limit != long.MaxValue
                && (tightest is null || layer.Remaining < tightest.Value.Remaining))
            {
                tightest = layer;
            }
        }

        if (tightest is { } chosen)
        {
            headers[$"x-ratelimit-limit-{unit}"] = chosen.Limit.ToString(CultureInfo.InvariantCulture);
            headers[$"x-ratelimit-remaining-{unit}"] = chosen.Remaining.ToString(CultureInfo.InvariantCulture);
            headers[$"x-ratelimit-reset-{unit}"] = Duration(chosen.ResetAfter);
        }
    }

    private static IEnumerable<LayerUsage> Ordered(IReadOnlyList<LayerUsage> usage, string? first) =>
        first is null ? usage : usage.Where(layer => layer.Layer == first).Concat(usage.Where(layer => layer.Layer != first));

    private static StringBuilder Separate(StringBuilder list) => list.Length == 0 ? list : list.Append(", ");

    private static string SfInteger(long value) => Math.Clamp(value, 0, MaxSfInteger).ToString(CultureInfo.InvariantCulture);

    /// <summary>A Structured Field String: printable ASCII only, with '"' and '\' escaped.</summary>
    private static string SfString(string value)
    {
        var text = new StringBuilder(value.Length + 2).Append('"');
        foreach (char c in value)
        {
            if (c is '"' or '\\')
            {
                text.Append('\\').Append(c);
            }
            else
            {
                text.Append(c is >= ' ' and <= '~' ? c : '?');
            }
        }

        return text.Append('"').ToString();
    }

    /// <summary>The OpenAI style of a reset: "20ms", "45s", "6m0s", "1h2m3s".</summary>
    private static string Duration(TimeSpan span)
    {
        if (span <= TimeSpan.Zero)
        {
            return "0s";
        }

        if (span < TimeSpan.FromSeconds(1))
        {
            return $"{Math.Ceiling(span.TotalMilliseconds).ToString(CultureInfo.InvariantCulture)}ms";
        }

        long seconds = Seconds(span);
        long hours = seconds / 3600;
        long minutes = seconds / 60 % 60;
        long rest = seconds % 60;
        return hours > 0 ? FormattableString.Invariant($"{hours}h{minutes}m{rest}s")
            : minutes > 0 ? FormattableString.Invariant($"{minutes}m{rest}s")
            : FormattableString.Invariant($"{rest}s");
    }
}
