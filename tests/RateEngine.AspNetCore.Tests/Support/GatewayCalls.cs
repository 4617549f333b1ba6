using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;

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

    /// <summary>
    /// A free user (one stream) opens a stream on <paramref name="opener"/>; a second stream on <paramref name="other"/> is
    /// refused by the slot; the first reads one chunk and goes away. The slot comes back, and the user paid for what was
    /// sent (the prompt and a chunk), not for the ~400 tokens reserved. The servers' chunks wait on <paramref name="time"/>.
    /// </summary>
    /// <param name="opener">Where the stream runs.</param>
    /// <param name="other">Where the second stream is refused and the slot is watched.</param>
    /// <param name="time">The servers' clock.</param>
    /// <param name="settleOthers">Run before the tokens are read on <paramref name="opener"/>: on Redis in hybrid mode, an
    /// instance's view of a layer also counts what the other instances hold reserved in their blocks, so stop them first.</param>
    public static async Task AbandonedStreamFreesItsSlotAndPaysForWhatItGot(RunningApp opener, RunningApp other, FakeTimeProvider time, Func<Task>? settleOthers = null)
    {
        using var first = new CancellationTokenSource();
        using HttpResponseMessage streaming = await opener.Client.SendAsync(
            ChatRequest("sk-alice", "/v1/chat/completions", stream: true, maxTokens: 400), HttpCompletionOption.ResponseHeadersRead, first.Token);
        Stream body = await streaming.Content.ReadAsStreamAsync(first.Token);

        // The stream waits for the fake clock: the first is in flight, so a second stream is refused.
        using HttpResponseMessage second = await Chat(other, "sk-alice", stream: true);
        Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
        Assert.Equal("user streams", (await Problem(second)).GetProperty("layer").GetString());

        time.Advance(TimeSpan.FromSeconds(1)); // one chunk of 20 tokens
        Assert.True(await body.ReadAsync(new byte[256], first.Token) > 0);
        await first.CancelAsync(); // the client goes away
        streaming.Dispose();

        for (int attempt = 0; attempt < 200; attempt++)
        {
            time.Advance(TimeSpan.FromMilliseconds(1)); // wakes the server's next chunk, which notices the abort
            if ((await Layer(other, "sk-alice", "user streams")).GetProperty("used").GetInt64() == 0)
            {
                break;
            }

            await Task.Delay(10);
        }

        // The lease settles its tokens before it frees the slot, so read the tokens only once the slot is free: read
        // before, they could still show the ~400 reserved.
        Assert.Equal(0, (await Layer(other, "sk-alice", "user streams")).GetProperty("used").GetInt64());
        if (settleOthers is not null)
        {
            await settleOthers();
        }

        long tokens = 0;
        for (int attempt = 0; attempt < 100; attempt++)
        {
            tokens = (await Layer(opener, "sk-alice", "user tokens/day")).GetProperty("used").GetInt64();
            if (tokens <= 200)
            {
                break;
            }

            await Task.Delay(20); // blocks given back by a stopped instance are on their way
        }

        Assert.True(tokens is >= 1 and <= 200, $"{tokens} tokens counted for a stream that got one chunk");
    }
}
