// An AI gateway in front of a simulated LLM, protected by the README's RateEngine policy.
//   dotnet run --project src/RateEngine.Samples.AiGateway                    (http://127.0.0.1:5080)
//   dotnet run --project src/RateEngine.Samples.AiGateway -- --redis 127.0.0.1:6379 (the policy on Redis in hybrid mode, shared by every instance)
//   dotnet run --project src/RateEngine.Samples.AiGateway -- --limiter inbox (the in-box chained limiters, for the bench)
//   dotnet run --project src/RateEngine.Samples.AiGateway -- --limiter none  (no limiter, for the bench)
using Microsoft.Extensions.Diagnostics.HealthChecks;
using RateEngine.AspNetCore;
using RateEngine.Redis;
using RateEngine.Samples.AiGateway;
using StackExchange.Redis;

WebApplication app = GatewayApp.Build(args);
await app.RunAsync();

namespace RateEngine.Samples.AiGateway
{
    /// <summary>Builds the gateway (the tests start it on a free port).</summary>
    public static class GatewayApp
    {
        public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
        {
            WebApplicationBuilder builder = WebApplication.CreateBuilder(args);
            builder.WebHost.UseUrls(builder.Configuration["urls"] ?? "http://127.0.0.1:5080");
            builder.Services.Configure<GatewayOptions>(builder.Configuration.GetSection("Gateway"));
            builder.Services.AddSingleton(TimeProvider.System);
            builder.Services.AddSingleton(_ => new CostEstimator<string>());
            builder.Services.AddSingleton(services => new UnknownKeyGuard(services.GetRequiredService<TimeProvider>()));
            string limiter = builder.Configuration["limiter"] ?? "rateengine";
            if (limiter != "rateengine" && builder.Configuration["redis"] is { Length: > 0 })
            {
                // Only RateEngine's policy runs on Redis: the in-box limiters would silently stay per instance.
                throw new ArgumentException($"--redis applies to --limiter rateengine only (the limiter is '{limiter}').", nameof(args));
            }

            switch (limiter)
            {
                case "rateengine" when builder.Configuration["redis"] is not { Length: > 0 }:
                    // README:aspnet:begin
                    builder.Services.AddRateEngine<ChatRequest>(GatewayRequests.ReadAsync, engine => engine
                        .AddPolicy(GatewayEndpoints.PolicyName, services =>
                        {
                            ILogger logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("Gateway");
                            return GatewayPolicy.Create(services.GetRequiredService<TimeProvider>(), crossing =>
                                logger.LogInformation("{Layer}: a user reached {Threshold:P0} of its budget", crossing.Layer, crossing.Threshold));
                        })
                        .UseEstimate(GatewayRequests.Estimate)
                        .UseModel(request => request.Model));
                    // README:aspnet:end
                    break;
                case "rateengine" when builder.Configuration["redis"] is { Length: > 0 } redis:
                    // Every instance shares the policy's state on Redis (hybrid mode): one multiplexer for the app, blocks reserved per key.
                    builder.Services.AddSingleton<IConnectionMultiplexer>(_ => ConnectionMultiplexer.Connect($"{redis},abortConnect=false"));
                    builder.Services.AddRateEngine<ChatRequest>(GatewayRequests.ReadAsync, engine => engine
                        .AddPolicy(GatewayEndpoints.PolicyName, services => GatewayPolicyOnRedis.Create(
                            services.GetRequiredService<IConnectionMultiplexer>(), services.GetRequiredService<ILoggerFactory>()))
                        .UseEstimate(GatewayRequests.Estimate)
                        .UseModel(request => request.Model));
                    builder.Services.AddHealthChecks().Add(new HealthCheckRegistration(
                        "redis", services => RedisLimiter.HealthCheck((RedisRatePolicy<ChatRequest>)services.GetRequiredService<RateEnginePolicies<ChatRequest>>()[GatewayEndpoints.PolicyName]),
                        failureStatus: null, tags: null));
                    break;
                case "inbox":
                    builder.Services.AddRateLimiter(options =>
                    {
                        options.GlobalLimiter = InBoxLimiters.Create();
                        options.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
                    });
                    break;
                case "none":
                    break;
                default:
                    throw new ArgumentException($"--limiter must be rateengine, inbox or none (it is '{limiter}').", nameof(args));
            }

            configure?.Invoke(builder);
            WebApplication app = builder.Build();
            app.Use(GatewayErrors.AnswerAsync);
            if (limiter != "none")
            {
                app.UseRateLimiter();
            }

            GatewayEndpoints.Map(app, rateEngine: limiter == "rateengine");
            if (builder.Configuration["redis"] is { Length: > 0 })
            {
                app.MapHealthChecks("/health");
            }
            return app;
        }
    }
}
