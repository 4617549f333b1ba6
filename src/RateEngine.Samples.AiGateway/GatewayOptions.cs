namespace RateEngine.Samples.AiGateway;

/// <summary>The gateway's own settings (the <c>Gateway</c> section): its API keys and the simulated model's pace.</summary>
public sealed class GatewayOptions
{
    /// <summary>API key → the user it belongs to.</summary>
    public Dictionary<string, GatewayUser> Users { get; } = new(StringComparer.Ordinal);

    /// <summary>The key of the admin endpoints (pause, resume).</summary>
    public string AdminKey { get; set; } = string.Empty;

    /// <summary>
    /// The largest request body the gateway reads, in bytes; 1 MiB by default. The policy needs the body (model and
    /// max_tokens) before it can decide, so without this cap any caller could make the gateway read and parse Kestrel's
    /// default 30 MB per request before a single limit applied. A larger body is answered 413.
    /// </summary>
    public long MaxRequestBytes { get; set; } = 1 << 20;

    /// <summary>The simulated model's delay between streamed chunks.</summary>
    public int ChunkDelayMilliseconds { get; set; } = 20;

    /// <summary>
    /// For load tests: this many extra users, keys <c>load-0</c> to <c>load-{N-1}</c>, enterprise tier, ten teams, and the
    /// client address taken from <c>X-Forwarded-For</c> (one per simulated client). 0 in normal runs.
    /// </summary>
    public int LoadUsers { get; set; }

    /// <summary>Finds the user of an API key.</summary>
    public GatewayUser? Find(string? apiKey)
    {
        if (apiKey is null)
        {
            return null;
        }

        if (Users.TryGetValue(apiKey, out GatewayUser? user))
        {
            return user;
        }

        return LoadUsers > 0 && apiKey.StartsWith("load-", StringComparison.Ordinal) && int.TryParse(apiKey.AsSpan(5), out int n) && n >= 0 && n < LoadUsers
            ? new GatewayUser { User = apiKey, Team = $"team-{n % 10}", Tier = "enterprise" }
            : null;
    }
}

/// <summary>One API key's owner.</summary>
public sealed class GatewayUser
{
    /// <summary>The user's id.</summary>
    public string User { get; set; } = string.Empty;

    /// <summary>The user's team (its daily budget is shared).</summary>
    public string Team { get; set; } = string.Empty;

    /// <summary>free, pro, team or enterprise.</summary>
    public string Tier { get; set; } = "free";
}
