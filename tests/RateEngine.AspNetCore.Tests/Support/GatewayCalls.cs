using System.Net.Http.Json;
using System.Text.Json;

namespace RateEngine.AspNetCore.Tests.Support;

/// <summary>What a client of the sample gateway sends and reads, shared by the in-memory and the Redis end-to-end tests.</summary>
public static class GatewayCalls
{
    public static Task<HttpResponseMessage> Chat(RunningApp gateway, string key, string path = "/v1/chat/completions", string model = "small", bool stream = false) =>
        gateway.Client.SendAsync(ChatRequest(key, path, stream, model: model));

    public static HttpRequestMessage ChatRequest(string key, string path, bool stream, int maxTokens = 300, string model = "small")
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Content = JsonContent.Create(new { model, max_tokens = maxTokens, stream, messages = new[] { new { role = "user", content = "How do layered rate limits work?" } } }),
        };
        request.Headers.Add("Authorization", $"Bearer {key}");
        return request;
    }

    public static Task<HttpResponseMessage> Admin(RunningApp gateway, string path)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path);
        request.Headers.Add("X-Admin-Key", "admin-secret");
        return gateway.Client.SendAsync(request);
    }

    public static async Task<JsonElement> Problem(HttpResponseMessage response)
    {
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    /// <summary>One layer's entry of the caller's <c>/usage</c>.</summary>
    public static async Task<JsonElement> Layer(RunningApp gateway, string key, string layer)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/usage");
        request.Headers.Add("Authorization", $"Bearer {key}");
        using HttpResponseMessage response = await gateway.Client.SendAsync(request);
        JsonElement usage = await response.Content.ReadFromJsonAsync<JsonElement>();
        return usage.GetProperty("layers").EnumerateArray().Single(item => item.GetProperty("layer").GetString() == layer);
    }
}
