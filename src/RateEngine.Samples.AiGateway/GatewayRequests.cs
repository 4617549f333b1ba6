using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using RateEngine.AspNetCore;

namespace RateEngine.Samples.AiGateway;

/// <summary>From an HTTP request to the policy's <see cref="ChatRequest"/> and its estimate.</summary>
public static class GatewayRequests
{
    private static readonly ClientIpOptions Direct = new();
    private static readonly ClientIpOptions BehindLoadBalancer = new() { ForwardedHeader = "X-Forwarded-For" };

    /// <summary>
    /// The caller's identity from its API key (<c>Authorization: Bearer ...</c>); 401 when unknown, 429 once an address has
    /// presented too many unknown keys (<see cref="UnknownKeyGuard"/>).
    /// </summary>
    public static GatewayUser Caller(HttpContext http)
    {
        GatewayOptions options = http.RequestServices.GetRequiredService<IOptions<GatewayOptions>>().Value;
        return options.Find(HttpPartitionKeys.ApiKey(http, "Authorization"))
            ?? throw http.RequestServices.GetRequiredService<UnknownKeyGuard>().Refuse(http);
    }

    /// <summary>The client's address: from the load balancer's header in load tests, else the connection's.</summary>
    public static string ClientIp(HttpContext http) =>
        HttpPartitionKeys.ClientIp(http, http.RequestServices.GetRequiredService<IOptions<GatewayOptions>>().Value.LoadUsers > 0 ? BehindLoadBalancer : Direct);

    /// <summary>The tools the gateway serves at <c>/v1/tools/{tool}</c>.</summary>
    public static readonly string[] Tools = ["search", "web_browse", "code_interpreter"];

    /// <summary>
    /// The tool a request calls: the route's <c>{tool}</c> (one of <see cref="Tools"/>: the route matches no other, in any
    /// case, and the name is lowered so that each tool is one key and one tier), or "chat" for plain completions.
    /// </summary>
    public static string Tool(HttpContext http) => HttpPartitionKeys.RouteValue(http, "tool")?.ToLowerInvariant() ?? "chat";

    /// <summary>
    /// The cost estimator's key: the model and the caller's tier. Keyed by model alone, one tier's callers (free ones
    /// sending max_tokens 1 in a loop) would drag every tier's reservations down to what they spend.
    /// </summary>
    public static string EstimatorKey(string tier, string model) => $"{tier}/{model}";

    /// <summary>The request as the policy sees it. Reads the body once and keeps it for the endpoint.</summary>
    public static async ValueTask<ChatRequest> ReadAsync(HttpContext http)
    {
        GatewayUser caller = Caller(http);
        ChatBody body = await BodyAsync(http);
        return new ChatRequest(ClientIp(http), caller.User, caller.Team, caller.Tier, Tool(http), body.Model, body.MaxTokens);
    }

    /// <summary>The request's body, read once (400 when it is not a chat request).</summary>
    public static async ValueTask<ChatBody> BodyAsync(HttpContext http)
    {
        if (http.Items.TryGetValue(typeof(ChatBody), out object? read))
        {
            return (ChatBody)read!;
        }

        // Read at most MaxRequestBytes: a declared length above it is refused unread, and Kestrel stops a chunked body there.
        long limit = http.RequestServices.GetRequiredService<IOptions<GatewayOptions>>().Value.MaxRequestBytes;
        if (http.Request.ContentLength > limit)
        {
            throw new BadHttpRequestException($"The body is larger than the gateway's {limit:N0} bytes.", StatusCodes.Status413PayloadTooLarge);
        }

        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size)
        {
            size.MaxRequestBodySize = limit;
        }

        // ReadFromJsonAsync refuses any other content type, and a charset it does not know, with an InvalidOperationException:
        // a 500 if it got that far, and before any layer counted the request. JSON is UTF-8 (RFC 8259).
        if (!http.Request.HasJsonContentType()
            || http.Request.GetTypedHeaders().ContentType?.Charset is { Length: > 0 } charset
                && !charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase))
        {
            throw new BadHttpRequestException("A chat request is UTF-8 JSON: send Content-Type: application/json.", StatusCodes.Status415UnsupportedMediaType);
        }

        ChatBody? body;
        try
        {
            body = await http.Request.ReadFromJsonAsync<ChatBody>(http.RequestAborted);
        }
        catch (JsonException exception)
        {
            throw new BadHttpRequestException($"The body is not a chat request: {exception.Message}", exception);
        }

        // JSON's nulls pass deserialization: a null model or message would throw later (a 500), so they are the client's 400.
        if (body is null || body.Model is null || body.MaxTokens <= 0 || !FakeModel.Prices.TryGetPrice(body.Model, out _)
            || body.Messages is null || body.Messages.Exists(message => message?.Content is null))
        {
            throw new BadHttpRequestException($"A chat request needs a known model ({string.Join(", ", FakeModel.Prices.Models)}), messages with content and a positive max_tokens.");
        }

        http.Items[typeof(ChatBody)] = body;
        return body;
    }

    /// <summary>
    /// What a request reserves: its prompt plus the output the estimator expects for the model (at most max_tokens), in
    /// tokens and in micro-dollars.
    /// </summary>
    public static RequestCost Estimate(HttpContext http, ChatRequest request)
    {
        var body = (ChatBody)http.Items[typeof(ChatBody)]!;
        var estimator = http.RequestServices.GetRequiredService<CostEstimator<string>>();
        int prompt = FakeModel.PromptTokens(body);
        long output = estimator.Estimate(EstimatorKey(request.Tier, request.Model), request.MaxTokens);
        return new RequestCost(prompt + output, FakeModel.Prices.MicroDollars(request.Model, prompt, output));
    }
}
