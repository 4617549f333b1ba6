using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using StackExchange.Redis;

namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// Issue 11's comparison on a loopback redis-server: 4 nodes (each its own connection and limiter) × 16 async callers, on
/// one key and on 10,000 keys (each attempt a random one), for exact mode, hybrid mode and the two seed designs, with
/// RateEngine's in-process limiter as the latency yardstick. A throughput run (a limit never reached) gives admissions per
/// second, the commands Redis counted per 1,000 admissions and the latency per acquire; a saturation run (callers hammering
/// a small cap, 1 ms back-off after a refusal) gives over- and under-admission from every decision's time.
/// </summary>
internal static class RedisHarness
{
    private const int Callers = RedisBenchSettings.Nodes * RedisBenchSettings.CallersPerNode;

    public static RedisResult Run(string endpoint, RedisBenchSettings settings, Action<string> progress)
    {
        var clock = Stopwatch.StartNew();
        long timerTicks = TimerPairTicks();
        string[] oneKey = ["shared"];
        string[] manyKeys = [.. Enumerable.Range(0, RedisBenchSettings.ManyKeys).Select(i => "user-" + i.ToString(System.Globalization.CultureInfo.InvariantCulture))];
        using ConnectionMultiplexer admin = ConnectionMultiplexer.Connect($"{endpoint},abortConnect=false,allowAdmin=true");
        IServer server = admin.GetServer(admin.GetEndPoints()[0]);
        ConnectionMultiplexer[] nodes = [.. Enumerable.Range(0, RedisBenchSettings.Nodes).Select(_ => ConnectionMultiplexer.Connect($"{endpoint},abortConnect=false,syncTimeout=5000,asyncTimeout=5000"))];
        var throughput = new List<RedisThroughput>();
        var saturation = new List<RedisSaturation>();
        var policy = new List<RedisThroughput>();
        try
        {
            foreach ((string[] keys, TimeSpan warmUp, TimeSpan measure) in new[] { (oneKey, settings.WarmUp, settings.Measure), (manyKeys, settings.ManyKeysWarmUp, settings.ManyKeysMeasure) })
            {
                foreach (RedisDesign design in (RedisDesign[])[RedisDesign.InProcess, .. RedisDesign.Compared])
                {
                    TimeSpan warm = keys.Length > 1 && design == RedisDesign.Hybrid ? settings.ManyKeysHybridWarmUp : warmUp;
                    progress($"redis: {design.Name}, {keys.Length:N0} key(s), throughput ({warm.TotalSeconds:F1} s warm-up, {measure.TotalSeconds:F1} s measured)");
                    RedisThroughput row = Throughput(design, nodes, server, keys, warm, measure, timerTicks, settings.HybridSteadyAfter) with { WarmUp = warm };
                    progress($"redis:   {row.AdmissionsPerSecond / 1e3:F1} k/s, {row.RoundTripsPerThousand:F1} round trips per 1,000, p50 {row.P50Microseconds:F2} µs, p99 {row.P99Microseconds:F1} µs");
                    throughput.Add(row);
                }
            }

            foreach (RedisDesign design in PolicyDesigns.All)
            {
                TimeSpan warm = design == PolicyDesigns.Hybrid ? settings.ManyKeysHybridWarmUp : settings.ManyKeysWarmUp;
                progress($"redis: {design.Name}, {manyKeys.Length:N0} users, throughput ({warm.TotalSeconds:F1} s warm-up, {settings.ManyKeysMeasure.TotalSeconds:F1} s measured)");
                RedisThroughput row = Throughput(design, nodes, server, manyKeys, warm, settings.ManyKeysMeasure, timerTicks, settings.HybridSteadyAfter) with { WarmUp = warm };
                progress($"redis:   {row.AdmissionsPerSecond / 1e3:F1} k/s, {row.RoundTripsPerThousand:F1} round trips per 1,000, p50 {row.P50Microseconds:F2} µs, p99 {row.P99Microseconds:F1} µs");
                policy.Add(row);
            }

            foreach ((string[] keys, int cap, TimeSpan window, TimeSpan duration) in new[]
            {
                (oneKey, settings.OneKeyCap, settings.OneKeyWindow, settings.OneKeySaturation),
                (manyKeys, settings.ManyKeysCap, settings.ManyKeysWindow, settings.ManyKeysSaturation),
            })
            {
                if (duration <= TimeSpan.Zero)
                {
                    continue;
                }

                foreach (RedisDesign design in RedisDesign.Compared)
                {
                    progress($"redis: {design.Name}, {keys.Length:N0} key(s), {cap} per {window.TotalMilliseconds:F0} ms for {duration.TotalSeconds:F1} s");
                    RedisSaturation row = Saturate(design, nodes, keys, cap, window, duration);
                    progress($"redis:   over {row.OverMax}, under {row.UnderShare:P1} over {row.SaturatedWindows} saturated windows");
                    saturation.Add(row);
                }
            }
        }
        finally
        {
            foreach (ConnectionMultiplexer node in nodes)
            {
                node.Dispose();
            }
        }

        return new RedisResult(throughput, saturation, policy, clock.Elapsed) { TimerPairNanoseconds = timerTicks * 1e9 / Stopwatch.Frequency };
    }

    private static PartitionedRateLimiter<string>[] Limiters(RedisDesign design, ConnectionMultiplexer[] nodes, int limit, TimeSpan window, StampClock? clock)
    {
        string prefix = "bench-" + Guid.NewGuid().ToString("N")[..12];
        return [.. nodes.Select((connection, node) => design.Create(new RedisDesign.NodeSetup(design.UsesRedis ? connection : null, prefix, node, limit, window, clock)))];
    }

    private static async Task DisposeAll(PartitionedRateLimiter<string>[] limiters)
    {
        foreach (PartitionedRateLimiter<string> limiter in limiters)
        {
            await limiter.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// What a latency sample's own two clock readings add to it: the median of empty pairs, measured once per run and taken
    /// off every sample. Left in, it pulls the locally served ratios toward 1× (about 25 ns here, against an in-process
    /// p50 of 80–300 ns).
    /// </summary>
    private static long TimerPairTicks()
    {
        const int Pairs = 200_001;
        var gaps = new long[Pairs];
        for (int round = 0; round < 2; round++) // the first round warms the clock's code up
        {
            for (int i = 0; i < gaps.Length; i++)
            {
                long started = Stopwatch.GetTimestamp();
                gaps[i] = Stopwatch.GetTimestamp() - started;
            }
        }

        Array.Sort(gaps);
        return gaps[Pairs / 2];
    }

    private static RedisThroughput Throughput(
        RedisDesign design, ConnectionMultiplexer[] nodes, IServer server, string[] keys, TimeSpan warmUp, TimeSpan measure, long timerTicks, TimeSpan steadyAfter)
    {
        PartitionedRateLimiter<string>[] limiters = Limiters(design, nodes, int.MaxValue, ThroughputWindow, clock: null);
        long start = Stopwatch.GetTimestamp();
        TimeSpan steady = steadyAfter > TimeSpan.Zero && (design == RedisDesign.Hybrid || design == PolicyDesigns.Hybrid)
            ? ToSteadyPhase(server, warmUp, measure, steadyAfter)
            : TimeSpan.Zero;
        long measureFrom = start + (long)((warmUp + steady).TotalSeconds * Stopwatch.Frequency);
        long until = measureFrom + (long)(measure.TotalSeconds * Stopwatch.Frequency);
        CommandStats? before = null;
        CommandStats? after = null;
        TimeSpan? phase = null;
        Thread? snapshots = null;
        if (design.UsesRedis)
        {
            // Its own thread, so that a reading is taken on time however busy the pool is.
            snapshots = new Thread(() =>
            {
                SleepUntil(measureFrom);
                before = CommandStats.ReadAsync(server).GetAwaiter().GetResult();
                phase = WindowPhase(server.Time());
                SleepUntil(until);
                after = CommandStats.ReadAsync(server).GetAwaiter().GetResult();
            }) { IsBackground = true, Priority = ThreadPriority.AboveNormal };
            snapshots.Start();
        }

        CallerResult[] results = Task.WhenAll(Enumerable.Range(0, Callers).Select(i =>
            Task.Run(() => Caller(limiters[i / RedisBenchSettings.CallersPerNode], keys, i, measureFrom, until, timerTicks)))).GetAwaiter().GetResult();
        snapshots?.Join();
        DisposeAll(limiters).GetAwaiter().GetResult();

        var all = new LatencyHistogram();
        var local = new LatencyHistogram();
        long admitted = 0;
        long refused = 0;
        foreach (CallerResult result in results)
        {
            all.Add(result.All);
            local.Add(result.Local);
            admitted += result.Admitted;
            refused += result.Refused;
        }

        IReadOnlyDictionary<string, long>? commands = after?.Since(before!);
        double perThousand = 1_000.0 / Math.Max(1, admitted);
        return new RedisThroughput(
            design.Name,
            keys.Length,
            admitted / measure.TotalSeconds,
            refused,
            commands,
            commands is null ? double.NaN : commands.Values.Sum() * perThousand,
            commands is null ? double.NaN : CommandStats.RoundTrips(commands, design.Scripted, design.QueuedPerTransaction) * perThousand,
            all.QuantileMicroseconds(0.5),
            all.QuantileMicroseconds(0.99),
            (double)local.Count / Math.Max(1, all.Count),
            local.QuantileMicroseconds(0.5),
            local.QuantileMicroseconds(0.99))
        {
            MeasuredFrom = phase,
        };
    }

    /// <summary>
    /// The throughput runs' window (every design's limit, and the policy's per-minute layers). A hybrid block ends with its
    /// window, so with many keys where the measured part falls in it matters: just after a boundary every key's blocks
    /// start small again. The report says where each run's measured part began.
    /// </summary>
    internal static readonly TimeSpan ThroughputWindow = TimeSpan.FromMinutes(1);

    /// <summary>
    /// How long after its warm-up a hybrid run waits so that its measured part lies in one window and starts at least
    /// <paramref name="steadyAfter"/> into it (<see cref="RedisBenchSettings.HybridSteadyAfter"/>). Right after a boundary
    /// every key's blocks are reserved again: with 10,000 keys on 4 nodes a burst of tens of thousands of reservations
    /// once a window, which a 1.5 s measurement just after it (one run on 2026-12-07: 33.7 round trips per 1,000 from
    /// 1.7 s into its window) reports as if it were the steady state. The phase is read from the server's clock, the
    /// scripts' own, so the measured part may start a round trip early.
    /// </summary>
    private static TimeSpan ToSteadyPhase(IServer server, TimeSpan warmUp, TimeSpan measure, TimeSpan steadyAfter)
    {
        TimeSpan phase = TimeSpan.FromTicks((WindowPhase(server.Time()) + warmUp).Ticks % ThroughputWindow.Ticks);
        if (phase < steadyAfter)
        {
            return steadyAfter - phase;
        }

        return phase + measure > ThroughputWindow ? ThroughputWindow - phase + steadyAfter : TimeSpan.Zero;
    }

    /// <summary>How far into its window (aligned to the Unix epoch, as the scripts' windows are) a server time is.</summary>
    private static TimeSpan WindowPhase(DateTime serverTime) =>
        TimeSpan.FromTicks((serverTime.ToUniversalTime() - DateTime.UnixEpoch).Ticks % ThroughputWindow.Ticks);

    /// <summary>Sleeps until a timestamp; at once if it has passed (a thread started late on a loaded machine).</summary>
    private static void SleepUntil(long timestamp)
    {
        TimeSpan left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), timestamp);
        if (left > TimeSpan.Zero)
        {
            Thread.Sleep(left);
        }
    }

    private sealed record CallerResult(LatencyHistogram All, LatencyHistogram Local, long Admitted, long Refused);

    private static async Task<CallerResult> Caller(PartitionedRateLimiter<string> limiter, string[] keys, int seed, long measureFrom, long until, long timerTicks)
    {
        var all = new LatencyHistogram();
        var local = new LatencyHistogram();
        long admitted = 0;
        long refused = 0;
        uint random = (uint)(seed + 1) * 2_654_435_761u;
        int completedInARow = 0;
        while (true)
        {
            string key = keys.Length == 1 ? keys[0] : keys[Next(ref random) % (uint)keys.Length];
            long started = Stopwatch.GetTimestamp();
            ValueTask<RateLimitLease> pending = limiter.AcquireAsync(key);
            bool completed = pending.IsCompleted; // answered without waiting: from a local block (or in process)
            RateLimitLease lease = completed ? pending.Result : await pending.ConfigureAwait(false);
            long ended = Stopwatch.GetTimestamp();
            bool acquired = lease.IsAcquired;
            lease.Dispose();
            if (ended >= until)
            {
                break;
            }

            if (ended >= measureFrom)
            {
                long took = ended - started - timerTicks;
                all.RecordTicks(took);
                if (completed)
                {
                    local.RecordTicks(took);
                }

                if (acquired)
                {
                    admitted++;
                }
                else
                {
                    refused++;
                }
            }

            // A caller answered synchronously never gives up its thread: yield now and then, so all 64 callers take turns
            // on the pool's threads (as a server's requests do) instead of the pool adding threads for starved ones.
            if (completed && ++completedInARow == 64)
            {
                completedInARow = 0;
                await Task.Yield();
            }
        }

        return new CallerResult(all, local, admitted, refused);
    }

    private static RedisSaturation Saturate(RedisDesign design, ConnectionMultiplexer[] nodes, string[] keys, int cap, TimeSpan window, TimeSpan duration)
    {
        var clock = new StampClock();
        PartitionedRateLimiter<string>[] limiters = Limiters(design, nodes, cap, window, clock);
        long start = Stopwatch.GetTimestamp();
        long until = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        List<Attempt>[] attempts = Task.WhenAll(Enumerable.Range(0, Callers).Select(i =>
            Task.Run(() => Hammer(limiters[i / RedisBenchSettings.CallersPerNode], keys, i, until, clock)))).GetAwaiter().GetResult();
        DisposeAll(limiters).GetAwaiter().GetResult();
        long windowMicros = window.Ticks / 10;
        (long over, double under, int saturated, double mean) = WindowCounts.Analyze(
            [.. attempts.SelectMany(list => list)], cap, windowMicros, design.SlidingLog, clock.UnixMicroseconds(start), clock.UnixMicroseconds(until));
        return new RedisSaturation(design.Name, keys.Length, cap, window, over, under, saturated, mean);
    }

    private static async Task<List<Attempt>> Hammer(PartitionedRateLimiter<string> limiter, string[] keys, int seed, long until, StampClock clock)
    {
        StrongBox<long> stamp = StampClock.Attach(); // this caller's flow: the limiter's clock readings for its acquires land here
        var attempts = new List<Attempt>();
        uint random = (uint)(seed + 1) * 2_654_435_761u;
        while (Stopwatch.GetTimestamp() < until)
        {
            int key = keys.Length == 1 ? 0 : (int)(Next(ref random) % (uint)keys.Length);
            stamp.Value = 0;
            using RateLimitLease lease = await limiter.AcquireAsync(keys[key]).ConfigureAwait(false);
            long decided = stamp.Value != 0 ? stamp.Value : Stopwatch.GetTimestamp(); // the last clock reading of the decision
            attempts.Add(new Attempt(key, clock.UnixMicroseconds(decided), lease.IsAcquired));
            if (!lease.IsAcquired)
            {
                await Task.Delay(1).ConfigureAwait(false);
            }
        }

        return attempts;
    }

    private static uint Next(ref uint state)
    {
        // xorshift32: a caller's own cheap sequence of keys, no shared Random.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        return state;
    }
}
