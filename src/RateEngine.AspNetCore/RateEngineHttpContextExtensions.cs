using Microsoft.AspNetCore.Http;

namespace RateEngine.AspNetCore;

/// <summary>The request's RateEngine decision from an endpoint.</summary>
public static class RateEngineHttpContextExtensions
{
    /// <summary>The request's decision, or null when no RateEngine policy applied to it.</summary>
    /// <exception cref="ArgumentNullException">The context is null.</exception>
    public static IRateEngineFeature? GetRateEngine(this HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.Features.Get<IRateEngineFeature>();
    }
}
