using System.Text;

namespace RateEngine.Samples.AiGateway;

/// <summary>
/// A simulated LLM, deterministic and offline: a prompt's tokens are its words, and the answer's length follows from
/// the prompt's text (a stable hash), capped by <c>max_tokens</c>.
/// </summary>
public static class FakeModel
{
    public static readonly PriceTable Prices = new([new ModelPrice("small", 0.15m, 0.60m), new ModelPrice("large", 2.50m, 10.00m)]);

    /// <summary>
    /// A prompt's words, split on any whitespace: split on spaces alone, a megabyte of words one per line counted as one
    /// token, a cheap way around the token and cost layers.
    /// </summary>
    public static int PromptTokens(ChatBody body) =>
        body.Messages.Sum(message => message.Content.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length) + 3 * body.Messages.Count;

    public static int OutputTokens(ChatBody body)
    {
        // FNV-1a over the prompt: the same prompt always gets an answer of the same length.
        uint hash = 2166136261;
        foreach (ChatMessage message in body.Messages)
        {
            foreach (char c in message.Content)
            {
                hash = (hash ^ c) * 16777619;
            }
        }

        return (int)Math.Min(body.MaxTokens, 40 + hash % 400);
    }

    /// <summary>The answer's words, one per token.</summary>
    public static string Word(int index) => Words[index % Words.Length];

    public static string Text(int tokens)
    {
        var text = new StringBuilder();
        for (int i = 0; i < tokens; i++)
        {
            text.Append(i == 0 ? string.Empty : " ").Append(Word(i));
        }

        return text.ToString();
    }

    private static readonly string[] Words = ["rate", "limits", "hold", "across", "every", "layer", "at", "once", "and", "budgets", "reconcile", "exactly"];
}
