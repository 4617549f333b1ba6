using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// A refusal's response: 429 (503 when service-wide) with <c>Retry-After</c> (none for a refusal that holds for good: a
/// retry would be refused the same way), the RateLimit fields, and an <c>application/problem+json</c> body (RFC 9457)
/// that names the policy and the layer.
/// </summary>
internal static class RejectionWriter
{
    public static async ValueTask WriteAsync<TContext>(HttpContext http, RequestDecision<TContext> decision, RateEngineOptions options, CancellationToken cancellationToken)
    {
        PolicyLease lease = decision.Lease;
        HttpResponse response = http.Response;
        int status = lease.IsServiceWide ? options.ServiceWideStatusCode : options.RejectedStatusCode;
        // A retry delay of zero (a store's refusal with no cool-down) would tell clients to come back at once: unknown instead,
        // and never sooner than the refusing layers' known lower bound (a spent daily budget beside a full stream slot).
        long? retryAfter = lease.IsPermanentRefusal ? null
            : lease.RetryAfter is { } after && after > TimeSpan.Zero ? RateLimitHeaders.Seconds(after)
            : Math.Max(options.UnknownRetryAfterSeconds, lease.MinimumRetryAfter is { } least && least > TimeSpan.Zero ? RateLimitHeaders.Seconds(least) : 0);
        response.StatusCode = status;
        if (retryAfter is { } seconds)
        {
            response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        }

        // A refusal by no layer of the policy (the pause, a store that is unavailable) has no layer's usage to show; asking the
        // store for it would cost a call per refusal, and during an outage a failed call and a warning per request.
        IReadOnlyList<LayerUsage> usage = lease.BlockingLayer is { } refusing && decision.Policy.LayerNames.Contains(refusing)
            ? await decision.UsageForHeadersAsync(cancellationToken).ConfigureAwait(false)
            : [];
        RateLimitHeaders.WriteIetf(response.Headers, decision.Policy, usage, lease.BlockingLayer);
        if (options.OpenAiHeaders)
        {
            RateLimitHeaders.WriteOpenAi(response.Headers, decision.Policy, usage);
        }

        response.ContentType = "application/problem+json";
        LayerUsage? blocking = usage.FirstOrDefault(layer => layer.Layer == lease.BlockingLayer) is { Layer: not null } found ? found : null;
        await using (var json = new Utf8JsonWriter(response.Body))
        {
            json.WriteStartObject();
            json.WriteString("type", status == StatusCodes.Status503ServiceUnavailable
                ? "https://www.rfc-editor.org/rfc/rfc9110#section-15.6.4"
                : "https://www.rfc-editor.org/rfc/rfc6585#section-4");
            json.WriteString("title", status == StatusCodes.Status503ServiceUnavailable ? "Service Unavailable" : "Too Many Requests");
            json.WriteNumber("status", status);
            json.WriteString("detail", lease.Reason);
            json.WriteString("policy", decision.PolicyName);
            json.WriteString("layer", lease.BlockingLayer);
            // Not a service-wide layer's: its limit and what is left are the whole service's spend, no customer's business.
            if (blocking is { } layer && !lease.IsServiceWide)
            {
                json.WriteNumber("limit", layer.Limit);
                json.WriteNumber("remaining", layer.Remaining);
            }

            if (retryAfter.HasValue)
            {
                json.WriteNumber("retryAfter", retryAfter.Value);
            }
            else
            {
                json.WriteBoolean("retryable", false);
            }

            json.WriteEndObject();
            await json.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
    }
}
