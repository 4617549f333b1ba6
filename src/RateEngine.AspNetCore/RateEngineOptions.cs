namespace RateEngine.AspNetCore;

/// <summary>
/// RateEngine's HTTP behaviour and the policies' tiers, bound from configuration (the <c>RateEngine</c> section by default)
/// and reloaded live: a change of tiers applies to the next request and keeps the usage already counted.
/// </summary>
/// <example>
/// <code>
/// "RateEngine": {
///   "OpenAiHeaders": true,
///   "Policies": { "gateway": { "Tiers": { "free": { "user cost/day": 100000 } } } }
/// }
/// </code>
/// </example>
public sealed class RateEngineOptions
{
    /// <summary>The configuration section RateEngine binds by default: <c>RateEngine</c>.</summary>
    public const string SectionName = "RateEngine";

    /// <summary>
    /// Per registered policy: tier limits that override the ones the policy was built with (tier → layer → limit; tiers
    /// and layers not named keep theirs). Default: none.
    /// </summary>
    public Dictionary<string, RateEnginePolicyOptions> Policies { get; } = new(StringComparer.Ordinal);

    /// <summary>The status of a refusal by a per-caller layer. Default 429 (Too Many Requests).</summary>
    public int RejectedStatusCode { get; set; } = 429;

    /// <summary>The status of a refusal that stops the whole service (a service-wide layer or the pause). Default 503.</summary>
    public int ServiceWideStatusCode { get; set; } = 503;

    /// <summary>
    /// The <c>Retry-After</c> of a refusal whose layers cannot say when they would admit (the operator's pause, a full
    /// concurrency layer among the refusing ones: a stream ends when it ends), in seconds, at least 1. Default 60.
    /// </summary>
    public int UnknownRetryAfterSeconds { get; set; } = 60;

    /// <summary>
    /// Whether successful responses carry the IETF <c>RateLimit-Policy</c> and <c>RateLimit</c> fields too (refusals always
    /// do). Default false.
    /// </summary>
    public bool RateLimitFieldsOnSuccess { get; set; }

    /// <summary>
    /// Whether responses carry the OpenAI-style set (<c>x-ratelimit-limit-requests</c>, <c>x-ratelimit-remaining-tokens</c>,
    /// <c>x-ratelimit-reset-tokens</c>, ..., and <c>x-ratelimit-remaining-cost</c> for money layers, in their units) for
    /// clients that parse those: the tightest layer of each kind that is not service-wide. Default false.
    /// </summary>
    public bool OpenAiHeaders { get; set; }
}
