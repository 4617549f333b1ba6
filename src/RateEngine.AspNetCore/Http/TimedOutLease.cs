using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Timeouts;

namespace RateEngine.AspNetCore.Http;

/// <summary>
/// The answer for a request whose timeout (<c>UseRequestTimeouts</c>) fired while RateEngine was deciding it: reading its
/// body, or waiting for a store. Nothing was acquired.
/// </summary>
/// <remarks>
/// The in-box middleware swallows a cancellation while <see cref="HttpContext.RequestAborted"/> is cancelled and returns
/// without a status, so the client would read <c>200 OK</c> with an empty body, and the timeouts middleware, which answers
/// only an exception, would never write its timeout status. This lease goes through the rejection path instead, where
/// <see cref="ThrowIfTimedOut"/> rethrows the cancellation for the timeouts middleware to answer as it is configured.
/// </remarks>
internal sealed class TimedOutLease : RateLimitLease
{
    public static readonly TimedOutLease Instance = new();

    private const string Reason = "The request timed out before RateEngine decided it.";

    private TimedOutLease()
    {
    }

    public override bool IsAcquired => false;

    public override IEnumerable<string> MetadataNames => [MetadataName.ReasonPhrase.Name];

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = metadataName == MetadataName.ReasonPhrase.Name ? Reason : null;
        return metadata is not null;
    }

    /// <summary>Whether the request's timeout has fired (the request timeouts middleware's own token, not the client's).</summary>
    public static bool TimedOut(HttpContext http) =>
        http.Features.Get<IHttpRequestTimeoutFeature>()?.RequestTimeoutToken.IsCancellationRequested == true;

    /// <summary>Throws the timeout's cancellation when <paramref name="lease"/> is this lease.</summary>
    public static void ThrowIfTimedOut(HttpContext http, RateLimitLease lease)
    {
        if (lease is TimedOutLease)
        {
            throw new OperationCanceledException(Reason, http.Features.Get<IHttpRequestTimeoutFeature>()?.RequestTimeoutToken ?? http.RequestAborted);
        }
    }
}
