namespace RateEngine.Samples.AiGateway;

/// <summary>A request refused for now (429), with how long to wait before asking again.</summary>
/// <param name="message">What the client is told.</param>
/// <param name="retryAfter">When a retry may pass; null when the limiter did not say.</param>
public sealed class RetryLaterException(string message, TimeSpan? retryAfter)
    : BadHttpRequestException(message, StatusCodes.Status429TooManyRequests)
{
    /// <summary>When a retry may pass: the <c>Retry-After</c> of the answer.</summary>
    public TimeSpan? RetryAfter { get; } = retryAfter;
}
