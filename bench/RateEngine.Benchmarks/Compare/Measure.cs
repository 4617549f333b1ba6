using System.Diagnostics;
using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Compare;

/// <summary>
/// The two ways the compare mode measures: a loop on the calling thread (ns/op and bytes/op) and N threads hammering
/// one shared limiter for a fixed time (total ops/s).
/// </summary>
internal static class Measure
{
    private const int Waiting = 0;
    private const int Running = 1;
    private const int Stopping = 2;

    /// <summary>Runs <paramref name="loop"/> for <paramref name="operations"/> attempts on this thread.</summary>
    public static Sample OnThisThread(Func<RateLimiter, long, long> loop, RateLimiter limiter, long operations)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        long start = Stopwatch.GetTimestamp();
        long acquired = loop(limiter, operations);
        TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        return new Sample(operations, acquired, elapsed, allocated);
    }

    /// <summary>Calls <paramref name="loop"/> in batches until <paramref name="duration"/> has passed (JIT tiering, caches).</summary>
    public static void WarmUp(Func<RateLimiter, long, long> loop, RateLimiter limiter, TimeSpan duration, long batch)
    {
        long start = Stopwatch.GetTimestamp();
        do
        {
            loop(limiter, batch);
        }
        while (Stopwatch.GetElapsedTime(start) < duration);
    }

    /// <summary>How many operations of <paramref name="loop"/> take about <paramref name="target"/> on this thread.</summary>
    public static long Calibrate(Func<RateLimiter, long, long> loop, RateLimiter limiter, TimeSpan target)
    {
        long operations = 1_000;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            loop(limiter, operations);
            TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
            if (elapsed >= target / 8 || operations >= 1L << 34)
            {
                return Math.Max(1_000, (long)(operations * (target / elapsed)));
            }

            operations *= 4;
        }
    }

    /// <summary>
    /// <paramref name="threads"/> threads call <paramref name="loop"/> on one shared <paramref name="limiter"/> in batches
    /// of <paramref name="batch"/> for <paramref name="duration"/>. Each thread times its own run from the start signal
    /// to its last batch; throughput is the sum of the threads' rates. Allocation is counted over the whole process.
    /// </summary>
    public static Sample OnThreads(
        int threads, Func<RateLimiter, long, long> loop, RateLimiter limiter, TimeSpan duration, long batch) =>
        OnThreads(threads, loop, _ => limiter, duration, batch);

    /// <summary>
    /// As above, but each thread calls <paramref name="loop"/> on its own state (<paramref name="stateOf"/> of its index,
    /// made on that thread before the start signal): per-thread cursors, say, over a shared limiter.
    /// </summary>
    public static Sample OnThreads<TState>(
        int threads, Func<TState, long, long> loop, Func<int, TState> stateOf, TimeSpan duration, long batch)
    {
        int state = Waiting;
        int ready = 0;
        var operations = new long[threads];
        var acquired = new long[threads];
        var elapsed = new TimeSpan[threads];
        Exception? failure = null;

        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int index = t;
            workers[t] = new Thread(() =>
            {
                try
                {
                    TState threadState = stateOf(index);
                    Interlocked.Increment(ref ready);
                    SpinWait spin = default;
                    while (Volatile.Read(ref state) == Waiting)
                    {
                        spin.SpinOnce(sleep1Threshold: -1);
                    }

                    // At least one batch, even when the run ended before this thread was scheduled (short smoke runs on a
                    // busy machine): each thread times itself, so a late batch only lengthens its own measured time.
                    long ops = 0;
                    long ok = 0;
                    long start = Stopwatch.GetTimestamp();
                    do
                    {
                        ok += loop(threadState, batch);
                        ops += batch;
                    }
                    while (Volatile.Read(ref state) == Running);

                    elapsed[index] = Stopwatch.GetElapsedTime(start);
                    operations[index] = ops;
                    acquired[index] = ok;
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
            })
            {
                IsBackground = true,
                Name = $"bench-worker-{t}",
            };
            workers[t].Start();
        }

        while (Volatile.Read(ref ready) < threads && Volatile.Read(ref failure) is null)
        {
            Thread.Yield();
        }

        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        Volatile.Write(ref state, Running);
        Thread.Sleep(duration);
        Volatile.Write(ref state, Stopping);
        foreach (Thread worker in workers)
        {
            worker.Join();
        }

        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        if (failure is not null)
        {
            throw new InvalidOperationException("A benchmark thread failed.", failure);
        }

        // Sum of per-thread rates, expressed as one sample over the mean elapsed time.
        double rate = 0;
        for (int t = 0; t < threads; t++)
        {
            Check.That(elapsed[t] > TimeSpan.Zero && operations[t] > 0, "a benchmark thread did not run");
            rate += operations[t] / elapsed[t].TotalSeconds;
        }

        long totalOperations = operations.Sum();
        return new Sample(totalOperations, acquired.Sum(), TimeSpan.FromSeconds(totalOperations / rate), allocated);
    }
}
