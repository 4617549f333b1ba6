using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using RateEngine.Redis.Tests.Support;
using RateEngine.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>
/// Three nodes (each its own connection and limiter) and four callers per node on one key, on the server's clock, for
/// about a second, through the limiters' public <c>AcquireAsync</c>. Every admission's decision time comes back from the
/// script; afterwards they are checked against the algorithm's guarantee (src/DESIGN.md), across all nodes together.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class RedisLimiterStressTests(RedisServer server)
{
    private const int Nodes = 3;
    private const int CallersPerNode = 4;
    /// <summary>Runs at least this long, and on until a few windows' worth is admitted (a loaded machine is slower), at most 20 s.</summary>
    private static readonly TimeSpan Duration = TimeSpan.FromSeconds(1);

    public static TheoryData<string> Algorithms => ["fixed", "bucket", "counter", "log"];

    [Theory]
    [MemberData(nameof(Algorithms))]
    public async Task AcquireAsync_ThreeNodesOnOneKey_NeverPassTheCapTogether(string algorithm)
    {
        string prefix = "stress-" + Guid.NewGuid().ToString("N");
        const int Limit = 40;
        const long WindowMicroseconds = 200_000;
        ConnectionMultiplexer[] connections = [.. Enumerable.Range(0, Nodes).Select(_ => server.Connect())];
        try
        {
            var nodes = connections.Select(connection => Create(algorithm, connection, prefix, Limit, TimeSpan.FromTicks(WindowMicroseconds * 10))).ToArray();
            var admitted = new ConcurrentBag<Admitted>();
            long refused = 0;
            long until = Environment.TickCount64 + (long)Duration.TotalMilliseconds;
            long giveUp = Environment.TickCount64 + 20_000;
            long admittedPermits = 0;
            long outOfBracket = 0;
            long leaseDisagrees = 0;
            IServer clock = connections[0].GetServer(connections[0].GetEndPoints()[0]);
            await Task.WhenAll(nodes.SelectMany(node => Enumerable.Range(0, CallersPerNode).Select(caller => Task.Run(async () =>
            {
                var random = new Random(caller);
                while ((Environment.TickCount64 < until || Interlocked.Read(ref admittedPermits) < 4 * Limit) && Environment.TickCount64 < giveUp)
                {
                    int permits = random.Next(1, 4);
                    var decided = new StrongBox<RedisDecision?>();
                    node.Decided.Value = decided;
                    long before = UnixMicroseconds(await clock.TimeAsync());
                    using RateLimitLease lease = await node.Limiter.AcquireAsync("shared", permits);
                    long after = UnixMicroseconds(await clock.TimeAsync());
                    RedisDecision decision = decided.Value ?? throw new InvalidOperationException("an acquire was answered without its script");
                    if (lease.IsAcquired != decision.Admitted)
                    {
                        Interlocked.Increment(ref leaseDisagrees);
                    }

                    if (decision.Admitted)
                    {
                        // The guarantee is checked on the stamps the script returns: each must be the server's time of the call.
                        if (decision.StampMicroseconds < before || decision.StampMicroseconds > after)
                        {
                            Interlocked.Increment(ref outOfBracket);
                        }

                        admitted.Add(new Admitted(decision.StampMicroseconds, permits));
                        Interlocked.Add(ref admittedPermits, permits);
                    }
                    else
                    {
                        Interlocked.Increment(ref refused);
                    }
                }
            }))));

            LimiterSpec spec = algorithm switch
            {
                "fixed" => new LimiterSpec(LimiterKind.Fixed, Limit, WindowMicroseconds),
                "bucket" => new LimiterSpec(LimiterKind.Bucket, Limit, WindowMicroseconds, TokensPerPeriod: 10),
                "counter" => new LimiterSpec(LimiterKind.Counter, Limit, WindowMicroseconds, Segments: 4),
                _ => new LimiterSpec(LimiterKind.Log, Limit, WindowMicroseconds),
            };
            Assert.Equal(0, outOfBracket);
            Assert.Equal(0, leaseDisagrees);
            Assert.Null(Guarantee.FindViolation(spec, admitted));
            Assert.True(admitted.Sum(a => a.Permits) > 2 * Limit, $"{admitted.Count} admissions: the run never filled a window");
            Assert.True(refused > 0, "nothing was refused: the run never reached the cap");
        }
        finally
        {
            foreach (ConnectionMultiplexer connection in connections)
            {
                connection.Dispose();
            }
        }
    }

    private static long UnixMicroseconds(DateTime serverTime) => (serverTime.ToUniversalTime() - DateTime.UnixEpoch).Ticks / 10;

    /// <summary>
    /// Three nodes as separate OS processes (the test assembly re-launched, see <see cref="NodeProcess"/>), each with its own
    /// multiplexer and four callers on one key for 1.5 s and on until it has admitted 2 × Limit permits (at most 25 s),
    /// started together; each writes its admissions to a file, and all of them together are checked offline against the
    /// window's guarantee: exact mode on the decision stamps the script returns, hybrid mode on the real-time µs each permit
    /// was used.
    /// </summary>
    [Theory]
    [InlineData("exact", "fixed")]
    [InlineData("exact", "counter")]
    [InlineData("hybrid", "fixed")]
    [InlineData("hybrid", "counter")]
    public async Task AttemptAcquire_NodesAsSeparateProcesses_NeverPassTheCapTogether(string mode, string algorithm)
    {
        const int Limit = 50;
        const long WindowMicroseconds = 100_000;
        string prefix = "processes-" + Guid.NewGuid().ToString("N");
        string directory = Directory.CreateTempSubdirectory("rateengine-nodes-").FullName;
        var processes = new List<Process>();
        try
        {
            for (int node = 0; node < Nodes; node++)
            {
                // Each node runs on until it has 2 × Limit permits, so the nodes together pass the 5 × Limit floor below
                // however slowly a loaded machine runs them.
                processes.Add(StartNode(mode, algorithm, prefix, Limit, WindowMicroseconds, minPermits: 2 * Limit, Path.Combine(directory, $"node-{node}.txt")));
            }

            foreach (Process process in processes)
            {
                Assert.Equal("ready", await ReadLine(process));
            }

            foreach (Process process in processes)
            {
                await process.StandardInput.WriteLineAsync("go");
                await process.StandardInput.FlushAsync();
            }

            long refused = 0;
            foreach (Process process in processes)
            {
                string done = await ReadLine(process);
                Assert.StartsWith("done ", done, StringComparison.Ordinal);
                refused += long.Parse(done.Split(' ')[2], System.Globalization.CultureInfo.InvariantCulture);
                using var exit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await process.WaitForExitAsync(exit.Token);
                Assert.True(process.ExitCode == 0, $"a node exited with {process.ExitCode}: {await process.StandardError.ReadToEndAsync()}");
            }

            Admitted[] admitted = [.. Enumerable.Range(0, Nodes).SelectMany(node => File.ReadAllLines(Path.Combine(directory, $"node-{node}.txt")))
                .Select(line => line.Split(' '))
                .Select(parts => new Admitted(long.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture), long.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture)))];
            LimiterSpec spec = algorithm == "fixed"
                ? new LimiterSpec(LimiterKind.Fixed, Limit, WindowMicroseconds)
                : new LimiterSpec(LimiterKind.Counter, Limit, WindowMicroseconds, Segments: 4);
            Assert.Null(Guarantee.FindViolation(spec, admitted));
            Assert.True(admitted.Sum(a => a.Permits) > 5 * Limit, $"{admitted.Length} admissions: the run never filled its windows");
            Assert.True(refused > 0, "nothing was refused: the run never reached the cap");
            Assert.True(admitted.Select(a => a.Stamp).Distinct().Count() > 1, "every admission has one time: the times were not recorded");
        }
        finally
        {
            foreach (Process process in processes)
            {
                if (!process.HasExited)
                {
                    process.Kill(entireProcessTree: true);
                }

                process.Dispose();
            }

            Directory.Delete(directory, recursive: true);
        }
    }

    private Process StartNode(string mode, string algorithm, string prefix, int limit, long windowMicroseconds, int minPermits, string output)
    {
        // The host that runs the tests (dotnet test sets DOTNET_HOST_PATH), else dotnet on PATH.
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] arguments =
        [
            typeof(NodeProcess).Assembly.Location, "node", mode, algorithm, server.Endpoint, prefix,
            limit.ToString(System.Globalization.CultureInfo.InvariantCulture), windowMicroseconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
            CallersPerNode.ToString(System.Globalization.CultureInfo.InvariantCulture), "1500",
            minPermits.ToString(System.Globalization.CultureInfo.InvariantCulture), "25000", output, // give up after 25 s: within ReadLine's 60 s
        ];
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        return Process.Start(start) ?? throw new InvalidOperationException("The node process did not start.");
    }

    /// <summary>A node's next line, or a failure naming what it wrote to stderr (at most 60 s: startup on a loaded machine).</summary>
    private static async Task<string> ReadLine(Process process)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        string? line = await process.StandardOutput.ReadLineAsync(timeout.Token);
        if (line is null)
        {
            await process.WaitForExitAsync(timeout.Token);
            Assert.Fail($"a node ended early ({process.ExitCode}): {await process.StandardError.ReadToEndAsync(timeout.Token)}");
        }

        return line;
    }

    private static Node Create(string algorithm, ConnectionMultiplexer connection, string prefix, int limit, TimeSpan window)
    {
        var options = new RedisLimiterOptions { Connection = connection, KeyPrefix = prefix, SyncTimeout = TimeSpan.FromSeconds(2) };
        return algorithm switch
        {
            "fixed" => new Node<FixedWindowRateLimiterOptions>(RedisLimiter.CreateFixedWindow<string>(
                key => key, _ => new FixedWindowRateLimiterOptions { PermitLimit = limit, Window = window }, options)),
            "bucket" => new Node<TokenBucketRateLimiterOptions>(RedisLimiter.CreateTokenBucket<string>(
                key => key, _ => new TokenBucketRateLimiterOptions { TokenLimit = limit, TokensPerPeriod = 10, ReplenishmentPeriod = window }, options)),
            "counter" => new Node<SlidingWindowCounterRateLimiterOptions>(RedisLimiter.CreateSlidingWindowCounter<string>(
                key => key, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = limit, Window = window, SegmentsPerWindow = 4 }, options)),
            _ => new Node<SlidingWindowLogRateLimiterOptions>(RedisLimiter.CreateSlidingWindowLog<string>(
                key => key, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = limit, Window = window }, options)),
        };
    }

    /// <summary>
    /// A node's limiter, called through its public acquire; the decision its script returned reaches the caller through
    /// <see cref="Decided"/>, a box each call sets on its own async flow.
    /// </summary>
    private abstract class Node(PartitionedRateLimiter<string> limiter)
    {
        public PartitionedRateLimiter<string> Limiter { get; } = limiter;

        public AsyncLocal<StrongBox<RedisDecision?>> Decided { get; } = new();
    }

    private sealed class Node<TOptions> : Node
        where TOptions : class
    {
        public Node(PartitionedRateLimiter<string> limiter)
            : base(limiter)
        {
            ((RedisPartitionedLimiter<string, TOptions>)limiter).DecisionObserver = decision =>
            {
                if (Decided.Value is { } box)
                {
                    box.Value = decision;
                }
            };
        }
    }
}
