using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Threading.RateLimiting;
using RateEngine.Redis;
using StackExchange.Redis;

namespace RateEngine.Benchmarks.Redis;

/// <summary>One mode's figures: admissions per second of all nodes, script calls per admission, and per-call latency.</summary>
internal sealed record RedisThroughput(string Mode, double AdmissionsPerSecond, double RoundTripsPerAdmission, double P50Microseconds, double P99Microseconds);

/// <summary>Permits used per full window near the cap, for one mode.</summary>
internal sealed record RedisFill(string Mode, long Limit, long[] PerWindow);

/// <summary>
/// The Redis mode on a loopback redis-server: 4 nodes (each its own connection and limiter) × 16 async callers on one
/// key. Throughput with a limit never reached (exact against hybrid), then 100 permits per 1-second window, where the
/// permits used per full window show the hybrid mode's under-admission next to the exact mode's.
/// </summary>
internal static class RedisHarness
{
    private const int Nodes = 4;
    private const int CallersPerNode = 16;

    public static (RedisThroughput[] Throughput, RedisFill[] Fill) Run(string endpoint, TimeSpan throughputRun, TimeSpan fillRun, Action<string> progress)
    {
        var throughput = new List<RedisThroughput>();
        var fill = new List<RedisFill>();
        foreach (bool hybrid in new[] { false, true })
        {
            string mode = hybrid ? "hybrid (MaxBlock 64)" : "exact (one script per acquire)";
            progress($"redis: {mode}, throughput for {throughputRun.TotalSeconds:F0} s");
            throughput.Add(Throughput(endpoint, mode, hybrid, throughputRun));
            progress($"redis: {mode}, 100 per second for {fillRun.TotalSeconds:F0} s");
            fill.Add(Fill(endpoint, mode, hybrid, fillRun));
        }

        return ([.. throughput], [.. fill]);
    }

    public static void AppendSection(StringBuilder text, RedisThroughput[] throughput, RedisFill[] fill)
    {
        text.AppendLine(CultureInfo.InvariantCulture, $"{Nodes} nodes (a connection and a limiter each) × {CallersPerNode} async callers, one key, one loopback redis-server, `AcquireAsync` in a loop.");
        text.AppendLine();
        text.AppendLine("| mode | admissions/s, all nodes | script calls per admission | latency p50 | latency p99 |");
        text.AppendLine("|---|---:|---:|---:|---:|");
        foreach (RedisThroughput row in throughput)
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {row.Mode} | {row.AdmissionsPerSecond / 1e3:F1} k | {row.RoundTripsPerAdmission:F3} | {row.P50Microseconds:F1} µs | {row.P99Microseconds:F0} µs |");
        }

        text.AppendLine();
        text.AppendLine("Near the cap: a fixed window of 100 permits per second on the server's clock, the same callers hammering it;");
        text.AppendLine("permits used in each full window (the cap is never passed: the tests check it offline).");
        text.AppendLine();
        text.AppendLine("| mode | permits used per full window | mean | under-admission |");
        text.AppendLine("|---|---|---:|---:|");
        foreach (RedisFill row in fill)
        {
            double mean = row.PerWindow.Length == 0 ? 0 : row.PerWindow.Average();
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {row.Mode} | {string.Join(' ', row.PerWindow)} | {mean:F1} | {(1 - (mean / row.Limit)) * 100:F1} % |");
        }

        text.AppendLine();
    }

    private static RedisThroughput Throughput(string endpoint, string mode, bool hybrid, TimeSpan duration)
    {
        string prefix = "bench-" + Guid.NewGuid().ToString("N");
        var latencies = new List<long>[Nodes * CallersPerNode];
        long admitted = 0;
        long trips = 0;
        RunNodes(endpoint, prefix, hybrid, limit: int.MaxValue, window: TimeSpan.FromMinutes(1), duration, (limiter, caller) => async until =>
        {
            var mine = latencies[caller] = [];
            while (Environment.TickCount64 < until)
            {
                long started = Stopwatch.GetTimestamp();
                using RateLimitLease lease = await limiter.AcquireAsync("shared").ConfigureAwait(false);
                mine.Add(Stopwatch.GetTimestamp() - started);
                if (lease.IsAcquired)
                {
                    Interlocked.Increment(ref admitted);
                }
            }
        }, roundTrips => trips = roundTrips);
        long[] all = [.. latencies.SelectMany(list => list).Order()];
        double Micros(double quantile) => all[(int)Math.Min(all.Length - 1, quantile * all.Length)] * 1e6 / Stopwatch.Frequency;
        return new RedisThroughput(mode, admitted / duration.TotalSeconds, (double)trips / admitted, Micros(0.5), Micros(0.99));
    }

    private static RedisFill Fill(string endpoint, string mode, bool hybrid, TimeSpan duration)
    {
        string prefix = "bench-" + Guid.NewGuid().ToString("N");
        var used = new System.Collections.Concurrent.ConcurrentDictionary<long, long>();
        RunNodes(endpoint, prefix, hybrid, limit: 100, window: TimeSpan.FromSeconds(1), duration, (limiter, _) => async until =>
        {
            while (Environment.TickCount64 < until)
            {
                using RateLimitLease lease = await limiter.AcquireAsync("shared").ConfigureAwait(false);
                if (lease.IsAcquired)
                {
                    // The window of the use, on this machine's clock (the server's, on loopback, is the same one).
                    used.AddOrUpdate(TimeProvider.System.GetUtcNow().ToUnixTimeMilliseconds() / 1_000, 1, (_, n) => n + 1);
                }
                else if (lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter))
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(retryAfter.TotalMilliseconds, 5))).ConfigureAwait(false);
                }
            }
        }, _ => { });
        long[] perWindow = [.. used.OrderBy(entry => entry.Key).Skip(1).SkipLast(1).Select(entry => entry.Value)];
        return new RedisFill(mode, 100, perWindow);
    }

    private static void RunNodes(
        string endpoint,
        string prefix,
        bool hybrid,
        int limit,
        TimeSpan window,
        TimeSpan duration,
        Func<PartitionedRateLimiter<string>, int, Func<long, Task>> caller,
        Action<long> roundTrips)
    {
        ConnectionMultiplexer[] connections = [.. Enumerable.Range(0, Nodes).Select(_ => ConnectionMultiplexer.Connect($"{endpoint},abortConnect=false"))];
        PartitionedRateLimiter<string>[] limiters = [.. connections.Select(connection => RedisLimiter.CreateFixedWindow<string>(
            key => key,
            _ => new FixedWindowRateLimiterOptions { PermitLimit = limit, Window = window },
            new RedisLimiterOptions { Connection = connection, KeyPrefix = prefix, Hybrid = hybrid ? new RedisHybridOptions() : null }))];
        try
        {
            long until = Environment.TickCount64 + (long)duration.TotalMilliseconds;
            Task.WhenAll(Enumerable.Range(0, Nodes * CallersPerNode)
                .Select(i => Task.Run(() => caller(limiters[i / CallersPerNode], i)(until)))).GetAwaiter().GetResult();
            roundTrips(limiters.Sum(RedisCalls.Of));
        }
        finally
        {
            foreach (PartitionedRateLimiter<string> limiter in limiters)
            {
                limiter.Dispose();
            }

            foreach (ConnectionMultiplexer connection in connections)
            {
                connection.Dispose();
            }
        }
    }
}
