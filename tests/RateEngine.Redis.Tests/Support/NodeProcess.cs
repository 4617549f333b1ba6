using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Threading.RateLimiting;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests.Support;

/// <summary>
/// A limiter node as an OS process of its own: the test assembly re-launched with <c>dotnet RateEngine.Redis.Tests.dll node
/// ...</c> (its entry point is <see cref="Main"/>; the test host never calls it). The node opens its own multiplexer, says
/// <c>ready</c>, waits for <c>go</c> on stdin, hammers one key for the given time and on until it has admitted the given
/// permits (a CPU-starved machine takes longer), at most the give-up time, writes each admission as "<c>µs permits</c>"
/// to its output file, and says <c>done admitted refused</c>.
/// </summary>
/// <remarks>
/// Exact mode records the decision stamp each script returns (the server's <c>TIME</c>). The hybrid mode decides locally,
/// so it records when each permit was used: the node's clock is <see cref="UseClock"/>, the real-time clock that Redis's
/// <c>TIME</c> reads too (one host), in whole µs, and a caller records the last time its own thread read that clock inside
/// its synchronous acquire, which is the read the block's expiry was checked against.
/// </remarks>
public static class NodeProcess
{
    /// <summary>Arguments: node mode algorithm endpoint prefix limit windowµs callers durationMs minPermits giveUpMs output.</summary>
    public static int Main(string[] args)
    {
        if (args is ["starve", string endpoint, string prefix, string what])
        {
            return Starve(endpoint, prefix, what);
        }

        if (args.Length != 12 || args[0] != "node")
        {
            Console.Error.WriteLine("usage: node <exact|hybrid> <fixed|counter> <endpoint> <prefix> <limit> <window µs> <callers> <duration ms> <min permits> <give up ms> <output>");
            return 2;
        }

        string mode = args[1];
        string algorithm = args[2];
        int limit = int.Parse(args[5], CultureInfo.InvariantCulture);
        TimeSpan window = TimeSpan.FromTicks(long.Parse(args[6], CultureInfo.InvariantCulture) * 10);
        int callers = int.Parse(args[7], CultureInfo.InvariantCulture);
        TimeSpan duration = TimeSpan.FromMilliseconds(int.Parse(args[8], CultureInfo.InvariantCulture));
        long minPermits = long.Parse(args[9], CultureInfo.InvariantCulture);
        TimeSpan giveUp = TimeSpan.FromMilliseconds(int.Parse(args[10], CultureInfo.InvariantCulture));
        using ConnectionMultiplexer connection = ConnectionMultiplexer.Connect($"{args[3]},abortConnect=false,connectTimeout=5000,syncTimeout=5000,asyncTimeout=5000");
        var options = new RedisLimiterOptions
        {
            Connection = connection,
            KeyPrefix = args[4],
            SyncTimeout = TimeSpan.FromSeconds(5),
            TimeProvider = mode == "hybrid" ? UseClock.Instance : TimeProvider.System,
            Hybrid = mode == "hybrid" ? new RedisHybridOptions { MaxBlock = 16 } : null,
        };
        using PartitionedRateLimiter<string> limiter = algorithm == "fixed"
            ? RedisLimiter.CreateFixedWindow<string>(key => key, _ => new FixedWindowRateLimiterOptions { PermitLimit = limit, Window = window }, options)
            : RedisLimiter.CreateSlidingWindowCounter<string>(
                key => key, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = limit, Window = window, SegmentsPerWindow = 4 }, options);
        Func<int, (bool Admitted, long Micros)> acquire = mode == "hybrid" ? Hybrid(limiter) : Exact(limiter);
        acquire(0); // loads the script and warms the path before the start line
        Console.Out.WriteLine("ready");
        Console.Out.Flush();
        if (Console.In.ReadLine() != "go")
        {
            return 3;
        }

        var admitted = new ConcurrentQueue<(long Micros, int Permits)>();
        long refused = 0;
        long admittedPermits = 0;
        var clock = Stopwatch.StartNew();
        Thread[] threads = [.. Enumerable.Range(0, callers).Select(caller => new Thread(() =>
        {
            var random = new Random(caller * 7919 + Environment.ProcessId);
            while ((clock.Elapsed < duration || Interlocked.Read(ref admittedPermits) < minPermits) && clock.Elapsed < giveUp)
            {
                int permits = random.Next(1, 4);
                (bool ok, long micros) = acquire(permits);
                if (ok)
                {
                    admitted.Enqueue((micros, permits));
                    Interlocked.Add(ref admittedPermits, permits);
                }
                else
                {
                    Interlocked.Increment(ref refused);
                }
            }
        }))];
        foreach (Thread thread in threads)
        {
            thread.Start();
        }

        foreach (Thread thread in threads)
        {
            thread.Join();
        }

        var lines = new StringBuilder();
        foreach ((long micros, int permits) in admitted)
        {
            lines.Append(CultureInfo.InvariantCulture, $"{micros} {permits}\n");
        }

        File.WriteAllText(args[11], lines.ToString());
        Console.Out.WriteLine($"done {admitted.Count} {refused}");
        return 0;
    }

    /// <summary>
    /// <c>starve endpoint prefix limiter|policy</c>: a hybrid limiter or policy whose process's thread pool is starved for
    /// real (its threads capped at the processor count, every one blocked), then one synchronous acquire on a cold key from
    /// the main thread, bounded by 2 s, and a PING. Writes <c>acquired=… degraded=… pinged=…</c>: whether the request was
    /// admitted, whether the breaker tripped, and whether the client read any answer at all.
    /// </summary>
    private static int Starve(string endpoint, string prefix, string what)
    {
        using ConnectionMultiplexer connection = ConnectionMultiplexer.Connect($"{endpoint},abortConnect=false,connectTimeout=5000,syncTimeout=5000,asyncTimeout=5000");
        var options = new RedisLimiterOptions
        {
            Connection = connection,
            KeyPrefix = prefix,
            SyncTimeout = TimeSpan.FromSeconds(2),
            FailureMode = RedisFailureMode.FailClosed,
            Hybrid = new RedisHybridOptions(),
        };
        using PartitionedRateLimiter<string> limiter = RedisLimiter.CreateFixedWindow<string>(
            key => key, _ => new FixedWindowRateLimiterOptions { PermitLimit = 1_000, Window = TimeSpan.FromMinutes(1) }, options);
        using RedisRatePolicy<string> policy = new RedisRatePolicyBuilder<string>(options)
            .AddLayer("user/min", key => key, PolicyRule.FixedWindow(TimeSpan.FromMinutes(1), 1_000))
            .Build();
        Func<string, bool> acquire = what == "limiter"
            ? key =>
            {
                using RateLimitLease lease = limiter.AttemptAcquire(key);
                return lease.IsAcquired;
            }
            : key =>
            {
                using PolicyLease lease = policy.Acquire(key, RequestCost.None);
                return lease.IsAcquired;
            };
        IRedisLimiterHealth health = what == "limiter" ? (IRedisLimiterHealth)limiter : policy;
        if (!acquire("warm-up"))
        {
            return 4; // the scripts are loaded, on a pool that is not starved yet
        }

        var gate = new ManualResetEventSlim(); // not disposed: the blocked work items still wait on it as the process ends
        ThreadPool.GetMaxThreads(out _, out int io);
        ThreadPool.SetMaxThreads(Environment.ProcessorCount, io);
        for (int i = 0; i < 64; i++)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static state => ((ManualResetEventSlim)state!).Wait(), gate);
        }

        for (int wait = 0; wait < 100 && ThreadPool.PendingWorkItemCount < 32; wait++)
        {
            Thread.Sleep(10);
        }

        bool acquired = acquire("cold");
        bool degraded = health.IsDegraded;
        Task<TimeSpan> ping = connection.GetDatabase().PingAsync();
        bool pinged = ((IAsyncResult)ping).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(2)); // does the client read at all?
        Console.Out.WriteLine($"acquired={acquired} degraded={degraded} pinged={pinged} pending={ThreadPool.PendingWorkItemCount}");
        Console.Out.Flush();
        gate.Set();
        return 0;
    }

    /// <summary>One script call per acquire: the decision and its stamp on the server's clock.</summary>
    private static Func<int, (bool, long)> Exact(PartitionedRateLimiter<string> limiter)
    {
        Func<int, Task<RedisResult>> evaluate = limiter switch
        {
            RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions> fixedWindow => permits => fixedWindow.Evaluate("hot", permits),
            RedisPartitionedLimiter<string, SlidingWindowCounterRateLimiterOptions> counter => permits => counter.Evaluate("hot", permits),
            _ => throw new InvalidOperationException("Not a Redis limiter."),
        };
        return permits =>
        {
            RedisDecision decision = RedisPartitionedLimiter<string, object>.Decision(evaluate(permits).GetAwaiter().GetResult());
            return (decision.Admitted, decision.StampMicroseconds);
        };
    }

    /// <summary>A synchronous acquire from the local blocks: admitted, and the µs its thread last read the clock.</summary>
    private static Func<int, (bool, long)> Hybrid(PartitionedRateLimiter<string> limiter) => permits =>
    {
        using RateLimitLease lease = limiter.AttemptAcquire(permits == 0 ? "warm-up" : "hot", Math.Max(permits, 1));
        return (lease.IsAcquired, UseClock.LastRead);
    };
}
