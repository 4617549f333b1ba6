using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using RateEngine.AspNetCore.Http;
using RateEngine.AspNetCore.Telemetry;

namespace RateEngine.AspNetCore;

/// <summary>Registers RateEngine with the in-box rate limiting middleware (<c>app.UseRateLimiter()</c>).</summary>
public static class RateEngineServiceCollectionExtensions
{
    /// <summary>
    /// Registers RateEngine policies keyed on the <see cref="HttpContext"/> itself (see <see cref="HttpPartitionKeys"/>).
    /// </summary>
    /// <inheritdoc cref="AddRateEngine{TContext}"/>
    public static IServiceCollection AddRateEngine(this IServiceCollection services, Action<RateEngineBuilder<HttpContext>> configure) =>
        services.AddRateEngine(static http => ValueTask.FromResult(http), configure);

    /// <summary>
    /// Registers RateEngine policies with the in-box rate limiting middleware: every policy becomes a named policy
    /// (<c>RequireRateLimiting(name)</c>, <c>[EnableRateLimiting(name)]</c>), and RateEngine's global limiter decides each
    /// request's global policies and its endpoint's policy together, all or nothing. Refusals answer 429 (503 when
    /// service-wide) with <c>Retry-After</c>, the IETF RateLimit fields and a problem body. Options bind from the
    /// <c>RateEngine</c> configuration section, are validated at start and reload live.
    /// </summary>
    /// <remarks>
    /// <para><paramref name="context"/> makes the policies' context from the request; it may read the body (a request whose
    /// context completes asynchronously is decided in the middleware's asynchronous acquire). Throw
    /// <see cref="BadHttpRequestException"/> from it for a malformed request.</para>
    /// <para>RateEngine installs its global limiter after the app's own configuration: an app's own
    /// <c>GlobalLimiter</c> is asked before it, once per pass of the pipeline (not all-or-nothing with it).</para>
    /// </remarks>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="InvalidOperationException">RateEngine is registered already.</exception>
    public static IServiceCollection AddRateEngine<TContext>(
        this IServiceCollection services, Func<HttpContext, ValueTask<TContext>> context, Action<RateEngineBuilder<TContext>> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(configure);
        if (services.Any(descriptor => descriptor.ServiceType == typeof(RateEngineMarker)))
        {
            throw new InvalidOperationException("RateEngine is registered already: register every policy in one AddRateEngine call.");
        }

        var registration = new RateEngineBuilder<TContext>(services);
        configure(registration);

        services.AddSingleton<RateEngineMarker>();
        services.AddMetrics();
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<RateEngineMetrics>();
        services.AddSingleton(registration);
        services.AddSingleton(provider => new RateEnginePolicies<TContext>(provider, registration));
        services.AddSingleton(provider => ActivatorUtilities.CreateInstance<RateEngineRuntime<TContext>>(provider, context));
        services.AddOptions<RateEngineOptions>().BindConfiguration(RateEngineOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<RateEngineOptions>, RateEngineOptionsValidator<TContext>>();
        services.AddRateLimiter(static _ => { });
        services.AddSingleton<IPostConfigureOptions<RateLimiterOptions>, RateLimiterSetup<TContext>>();
        return services;
    }

    /// <summary>Marks that RateEngine is registered (one registration per app).</summary>
    private sealed class RateEngineMarker;
}
