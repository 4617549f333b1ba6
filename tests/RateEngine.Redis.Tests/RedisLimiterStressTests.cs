using System.Collections.Concurrent;
using System.Threading.RateLimiting;
using RateEngine.Redis.Tests.Support;
using RateEngine.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>
/// Three nodes (each its own connection and limiter) and four callers per node on one key, on the server's clock, for
/// about a second. Every admission's decision time comes back from the script; afterwards they are checked against the
/// algorithm's guarantee (src/DESIGN.md), across all nodes together.
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
            await Task.WhenAll(nodes.SelectMany(node => Enumerable.Range(0, CallersPerNode).Select(caller => Task.Run(async () =>
            {
                var random = new Random(caller);
                while ((Environment.TickCount64 < until || Interlocked.Read(ref admittedPermits) < 4 * Limit) && Environment.TickCount64 < giveUp)
                {
                    int permits = random.Next(1, 4);
                    RedisDecision decision = node.Decide(await node.Evaluate("shared", permits));
                    if (decision.Admitted)
                    {
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

    private abstract class Node
    {
        public abstract Task<RedisResult> Evaluate(string key, int permits);

        public RedisDecision Decide(RedisResult result) => RedisPartitionedLimiter<string, object>.Decision(result);
    }

    private sealed class Node<TOptions>(PartitionedRateLimiter<string> limiter) : Node
        where TOptions : class
    {
        public override Task<RedisResult> Evaluate(string key, int permits) =>
            ((RedisPartitionedLimiter<string, TOptions>)limiter).Evaluate(key, permits);
    }
}
