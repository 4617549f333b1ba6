using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using RateEngine.Benchmarks.Compare;

namespace RateEngine.Benchmarks.Http;

/// <summary>
/// Requests per second on the sample gateway's completion endpoint, served by a separate process on loopback, under
/// three configurations: no limiter, the in-box middleware with chained in-box limiters, and RateEngine's policy. The
/// load client is this process: a fixed number of connections, each sending the next request when the last answered.
/// </summary>
internal static class HttpHarness
{
    public static readonly string[] Limiters = ["none", "inbox", "rateengine"];

    /// <summary>Simulated callers: each its own API key and forwarded address, so no per-user or per-IP limit is reached.</summary>
    private const int Users = 100_000;

    public static IReadOnlyList<HttpRow> Run(string repositoryRoot, int connections, TimeSpan warmUp, TimeSpan measure, int rounds, Action<string> progress)
    {
        string sample = SampleDirectory(repositoryRoot);
        var servers = new List<GatewayProcess>();
        try
        {
            foreach (string limiter in Limiters)
            {
                servers.Add(GatewayProcess.Start(sample, limiter));
            }

            foreach (GatewayProcess server in servers)
            {
                server.WaitUntilServing();
                progress($"{server.Limiter}: serving on {server.Address}; warming up {warmUp.TotalSeconds:F0} s");
                _ = Load(server.Address, connections, warmUp, userOffset: 0);
            }

            var samples = Limiters.ToDictionary(limiter => limiter, _ => new List<LoadResult>());
            int offset = 0;
            for (int round = 0; round < rounds; round++)
            {
                // Rotated order per round: a burst of outside load is spread over all three.
                for (int k = 0; k < servers.Count; k++)
                {
                    GatewayProcess server = servers[(round + k) % servers.Count];
                    LoadResult result = Load(server.Address, connections, measure, offset += 7_919);
                    samples[server.Limiter].Add(result);
                    progress($"round {round + 1}/{rounds} {server.Limiter}: {result.RequestsPerSecond:N0} req/s, p50 {result.P50.TotalMilliseconds:F2} ms, p99 {result.P99.TotalMilliseconds:F2} ms, {result.Refused} refused, {result.Errors} errors");
                }
            }

            return [.. Limiters.Select(limiter => HttpRow.From(limiter, samples[limiter]))];
        }
        finally
        {
            foreach (GatewayProcess server in servers)
            {
                server.Dispose();
            }
        }
    }

    public static void AppendSection(StringBuilder text, IReadOnlyList<HttpRow> rows, int connections, TimeSpan measure, int rounds)
    {
        HttpRow none = rows.Single(row => row.Limiter == "none");
        string[] header = ["configuration", "req/s (median)", "min–max", "× no limiter", "p50 ms", "p99 ms", "non-2xx"];
        var table = rows.Select(row => new[]
        {
            Describe(row.Limiter),
            row.Median.ToString("N0", CultureInfo.InvariantCulture),
            $"{row.Min.ToString("N0", CultureInfo.InvariantCulture)}–{row.Max.ToString("N0", CultureInfo.InvariantCulture)}",
            (row.Median / none.Median).ToString("F2", CultureInfo.InvariantCulture),
            row.P50.TotalMilliseconds.ToString("F2", CultureInfo.InvariantCulture),
            row.P99.TotalMilliseconds.ToString("F2", CultureInfo.InvariantCulture),
            (row.Refused + row.Errors).ToString(CultureInfo.InvariantCulture),
        }).ToList();
        text.AppendLine(MarkdownTable.Render(header, [false, true, true, true, true, true, true], table));
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture,
            $"`POST /v1/chat/completions` (small model, `max_tokens` 64, not streamed) from {connections} keep-alive connections of one client process, {rounds} rounds of {measure.TotalSeconds:F0} s each per configuration in rotated order after a warm-up; the median round, min–max over rounds, latency percentiles of the median round. {Users:N0} simulated users (API keys `load-N`, enterprise tier, their own `X-Forwarded-For` address) so that no limit is reached: every request is decided and admitted. The server and the client share the machine's cores.");
        text.AppendLine();
        text.AppendLine("- **no limiter**: the endpoint alone (it still reads the body and answers from the simulated model).");
        text.AppendLine("- **in-box**: `AddRateLimiter` with a `GlobalLimiter` of five in-box partitioned limiters chained with `CreateChained` (per IP and per user sliding windows, per (user, tool) fixed window, streams per user, per team): the request-count layers the in-box limiters can express; they cannot weigh tokens or money.");
        text.AppendLine("- **RateEngine**: `AddRateEngine` with the README's twelve-layer policy (IP, user, tool, streams, tokens per minute/hour/day, daily cost and its alerts, team and global daily cost), the body read once for the estimate, the prompt charged, the actual reconciled; the IETF and OpenAI-style headers on every response.");
    }

    private static string Describe(string limiter) => limiter switch
    {
        "none" => "no limiter",
        "inbox" => "in-box chained limiters (5 layers)",
        _ => "RateEngine policy (12 layers, reserve + reconcile)",
    };

    private static string SampleDirectory(string repositoryRoot)
    {
        string dir = Path.Combine(repositoryRoot, "src", "RateEngine.Samples.AiGateway", "bin", "Release", "net10.0");
        return File.Exists(Path.Combine(dir, "RateEngine.Samples.AiGateway.dll"))
            ? dir
            : throw new InvalidOperationException($"The sample is not built in {dir}: run the bench with -c Release (it builds the sample).");
    }

    private static LoadResult Load(Uri address, int connections, TimeSpan duration, int userOffset)
    {
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = connections, PooledConnectionLifetime = Timeout.InfiniteTimeSpan, UseProxy = false };
        using var client = new HttpClient(handler) { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
        var latencies = new List<long>[connections];
        long ok = 0, refused = 0, errors = 0;
        var clock = Stopwatch.StartNew();
        long end = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        Task[] workers = [.. Enumerable.Range(0, connections).Select(connection => Task.Run(async () =>
        {
            var mine = latencies[connection] = new List<long>(1 << 16);
            int user = userOffset + connection;
            while (Stopwatch.GetTimestamp() < end)
            {
                user = (user + connections) % Users;
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new ByteArrayContent(Body) };
                request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
                request.Headers.TryAddWithoutValidation("Authorization", $"Bearer load-{user}");
                request.Headers.TryAddWithoutValidation("X-Forwarded-For", $"10.{user >> 16 & 255}.{user >> 8 & 255}.{user & 255}");
                long started = Stopwatch.GetTimestamp();
                try
                {
                    using HttpResponseMessage response = await client.SendAsync(request).ConfigureAwait(false);
                    await response.Content.LoadIntoBufferAsync().ConfigureAwait(false);
                    mine.Add(Stopwatch.GetTimestamp() - started);
                    if (response.IsSuccessStatusCode)
                    {
                        Interlocked.Increment(ref ok);
                    }
                    else
                    {
                        Interlocked.Increment(ref refused);
                    }
                }
                catch (HttpRequestException)
                {
                    Interlocked.Increment(ref errors);
                }
            }
        }))];
        Task.WaitAll(workers);
        double seconds = clock.Elapsed.TotalSeconds;
        long[] all = [.. latencies.SelectMany(list => list ?? []).Order()];
        return new LoadResult(ok / seconds, Percentile(all, 0.50), Percentile(all, 0.99), refused, errors);
    }

    private static TimeSpan Percentile(long[] sorted, double p) =>
        sorted.Length == 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))] / (double)Stopwatch.Frequency);

    private static readonly byte[] Body = Encoding.UTF8.GetBytes(
        """{"model":"small","max_tokens":64,"messages":[{"role":"user","content":"Summarise why layered rate limits must be decided all or nothing."}]}""");

    /// <summary>One sample gateway process.</summary>
    private sealed class GatewayProcess : IDisposable
    {
        private readonly Process _process;

        private GatewayProcess(Process process, string limiter, Uri address)
        {
            _process = process;
            Limiter = limiter;
            Address = address;
        }

        public string Limiter { get; }

        public Uri Address { get; }

        public static GatewayProcess Start(string sampleDirectory, string limiter)
        {
            int port = FreePort();
            var start = new ProcessStartInfo("dotnet")
            {
                WorkingDirectory = sampleDirectory,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string arg in (string[])["RateEngine.Samples.AiGateway.dll", $"--urls=http://127.0.0.1:{port}", $"--limiter={limiter}",
                $"--Gateway:LoadUsers={Users}", "--Logging:LogLevel:Default=Warning", "--Logging:LogLevel:Microsoft.Hosting.Lifetime=Warning", "--Logging:LogLevel:RateEngine=Warning"])
            {
                start.ArgumentList.Add(arg);
            }

            Process process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start");
            process.OutputDataReceived += (_, _) => { };
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                {
                    Console.Error.WriteLine($"[{limiter}] {e.Data}");
                }
            };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return new GatewayProcess(process, limiter, new Uri($"http://127.0.0.1:{port}"));
        }

        public void WaitUntilServing()
        {
            using var client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(2) };
            for (int attempt = 0; attempt < 300; attempt++)
            {
                if (_process.HasExited)
                {
                    throw new InvalidOperationException($"The {Limiter} gateway exited with {_process.ExitCode}.");
                }

                try
                {
                    using HttpResponseMessage response = client.PostAsync("/v1/chat/completions", null).GetAwaiter().GetResult();
                    return; // any answer (401 without a key) means it serves
                }
                catch (HttpRequestException)
                {
                    Thread.Sleep(50);
                }
            }

            throw new TimeoutException($"The {Limiter} gateway did not start serving on {Address}.");
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
            }

            _process.Dispose();
        }

        private static int FreePort()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
    }
}

internal sealed record LoadResult(double RequestsPerSecond, TimeSpan P50, TimeSpan P99, long Refused, long Errors);

internal sealed record HttpRow(string Limiter, double Median, double Min, double Max, TimeSpan P50, TimeSpan P99, long Refused, long Errors)
{
    public static HttpRow From(string limiter, List<LoadResult> rounds)
    {
        LoadResult median = rounds.OrderBy(r => r.RequestsPerSecond).ElementAt(rounds.Count / 2);
        return new HttpRow(limiter, median.RequestsPerSecond, rounds.Min(r => r.RequestsPerSecond), rounds.Max(r => r.RequestsPerSecond),
            median.P50, median.P99, rounds.Sum(r => r.Refused), rounds.Sum(r => r.Errors));
    }
}
