using System.Text.Json.Serialization;

namespace RateEngine.Samples.AiGateway;

/// <summary>An OpenAI-style chat request body.</summary>
public sealed class ChatBody
{
    /// <summary>The model: "small" or "large".</summary>
    [JsonPropertyName("model")]
    public string Model { get; set; } = "small";

    /// <summary>The conversation.</summary>
    [JsonPropertyName("messages")]
    public List<ChatMessage> Messages { get; set; } = [];

    /// <summary>The most output tokens the caller accepts.</summary>
    [JsonPropertyName("max_tokens")]
    public int MaxTokens { get; set; } = 256;

    /// <summary>Whether to stream the answer as server-sent events.</summary>
    [JsonPropertyName("stream")]
    public bool Stream { get; set; }
}

/// <summary>One message of a conversation.</summary>
public sealed class ChatMessage
{
    /// <summary>"user", "system" or "assistant".</summary>
    [JsonPropertyName("role")]
    public string Role { get; set; } = "user";

    /// <summary>The text.</summary>
    [JsonPropertyName("content")]
    public string Content { get; set; } = string.Empty;
}
