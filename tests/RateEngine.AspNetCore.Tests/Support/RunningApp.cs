using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace RateEngine.AspNetCore.Tests.Support;

/// <summary>A real Kestrel server on 127.0.0.1 and a free port, and an <see cref="HttpClient"/> pointed at it.</summary>
public sealed class RunningApp : IAsyncDisposable
{
    private RunningApp(WebApplication app, Uri address)
    {
        App = app;
        Client = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
    }

    public WebApplication App { get; }

    public HttpClient Client { get; }

    public IServiceProvider Services => App.Services;

    /// <summary>A test app's builder: 127.0.0.1 on a free port, no logging, and an empty content root.</summary>
    public static WebApplicationBuilder CreateBuilder()
    {
        // An empty content root: the sample's appsettings.json sits in this project's output and is not these apps' configuration.
        string root = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), "rateengine-aspnetcore-tests")).FullName;
        WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = root });
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        return builder;
    }

    public static Task<RunningApp> StartAsync(Action<WebApplicationBuilder> configure, Action<WebApplication> map, IDictionary<string, string?>? configuration = null)
    {
        WebApplicationBuilder builder = CreateBuilder();
        if (configuration is not null)
        {
            builder.Configuration.AddInMemoryCollection(configuration);
        }

        configure(builder);
        WebApplication app = builder.Build();
        app.UseRateLimiter();
        map(app);
        return StartAsync(app);
    }

    public static async Task<RunningApp> StartAsync(WebApplication app)
    {
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new RunningApp(app, new Uri(address));
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
