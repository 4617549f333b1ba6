namespace RateEngine.Samples.AiGateway;

/// <summary>
/// Answers a request refused with a <see cref="BadHttpRequestException"/> (an unknown key, a bad or oversized body, too many
/// key guesses) with its status, a problem body, and <c>Retry-After</c> on a 429. Left to the server, such an answer has
/// neither: Kestrel writes the status alone, with the response's headers cleared.
/// </summary>
public static class GatewayErrors
{
    /// <summary>The middleware: first in the pipeline, so that the rate limiter's context factory is inside it.</summary>
    public static async Task AnswerAsync(HttpContext http, RequestDelegate next)
    {
        try
        {
            await next(http);
        }
        catch (BadHttpRequestException refusal) when (!http.Response.HasStarted)
        {
            http.Response.Clear();
            if (refusal is RetryLaterException { RetryAfter: { } wait })
            {
                http.Response.Headers.RetryAfter = ((long)Math.Ceiling(wait.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            await Results.Problem(detail: refusal.Message, statusCode: refusal.StatusCode).ExecuteAsync(http);
        }
    }
}
