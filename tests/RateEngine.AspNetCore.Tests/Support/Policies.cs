using System.Globalization;
using Microsoft.AspNetCore.Http;

namespace RateEngine.AspNetCore.Tests.Support;

/// <summary>Small policies keyed on the request itself, and the estimate a test sends in a header.</summary>
public static class Policies
{
    public static readonly Func<HttpContext, string> ByApiKey = http => HttpPartitionKeys.ApiKey(http) ?? "anonymous";

    /// <summary>A per-key request rate and a per-key daily token budget.</summary>
    public static RatePolicy<HttpContext> PerUser(TimeProvider time, long requestsPerMinute, long tokensPerDay = 1_000_000) =>
        new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(time)
            .AddLayer("user", ByApiKey, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), limit: requestsPerMinute))
            .AddLayer("user tokens/day", ByApiKey, PolicyRule.Calendar(CalendarPeriod.Day, limit: tokensPerDay).Counting(PolicyMeter.Tokens))
            .Build();

    /// <summary>A service-wide daily token cap: refusals answer 503.</summary>
    public static RatePolicy<HttpContext> ServiceWide(TimeProvider time, long tokensPerDay) =>
        new RatePolicyBuilder<HttpContext>()
            .UseTimeProvider(time)
            .AddGlobalLayer("service tokens/day", PolicyRule.Calendar(CalendarPeriod.Day, limit: tokensPerDay).Counting(PolicyMeter.Tokens)
                .AsServiceWide().WithReason("the service's daily token cap is reached"))
            .Build();

    /// <summary>The estimate in the request's <c>X-Estimate</c> header (tokens), else none.</summary>
    public static RequestCost EstimateHeader(HttpContext http, HttpContext _) =>
        long.TryParse(http.Request.Headers["X-Estimate"], NumberStyles.None, CultureInfo.InvariantCulture, out long tokens) ? new RequestCost(tokens, 0) : RequestCost.None;

    public static HttpRequestMessage Request(string path, string apiKey, long? estimate = null, HttpMethod? method = null)
    {
        var request = new HttpRequestMessage(method ?? HttpMethod.Post, path);
        request.Headers.Add("X-Api-Key", apiKey);
        if (estimate is { } tokens)
        {
            request.Headers.Add("X-Estimate", tokens.ToString(CultureInfo.InvariantCulture));
        }

        return request;
    }

    /// <summary>A context for reading a policy's usage from a test (the layers key on the API key header).</summary>
    public static HttpContext Context(string apiKey)
    {
        var http = new DefaultHttpContext();
        http.Request.Headers["X-Api-Key"] = apiKey;
        return http;
    }
}
