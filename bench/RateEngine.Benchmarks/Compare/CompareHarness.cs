using System.Diagnostics;
using System.Threading.RateLimiting;
using RateEngine.Benchmarks.Simulations;
using RateEngine.Benchmarks.Subjects;

namespace RateEngine.Benchmarks.Compare;

/// <summary>
/// The default mode: every limiter and the Interlocked ceiling measured in one process, in interleaved rounds (each round
/// visits every limiter, in a rotated order, so that a burst of outside load hits all of them alike), medians reported.
/// </summary>
internal sealed class CompareHarness(CompareSettings settings)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public CompareResult Run()
    {
        MachineInfo machine = MachineInfo.Read();
        Progress($"compare: {machine.Cpu}, {machine.Cores} cores, {machine.Runtime}; load average {machine.LoadAverageAtStart}");
        Progress($"compare: {settings.Rounds} rounds x (admit {Ms(settings.SingleThreadRound)}, reject {Ms(settings.SingleThreadRound)}, "
            + $"1 thread {Ms(settings.ThreadedRound)}, 2 threads {Ms(settings.ThreadedRound)}) per limiter");

        List<Subject> subjects = [.. LimiterKinds.All.Select(Subject.ForLimiter), Subject.Ceiling()];
        try
        {
            for (int pass = 1; pass <= 2; pass++)
            {
                foreach (Subject subject in subjects)
                {
                    Progress($"warm-up {pass}/2: {subject.Name}");
                    Measure.WarmUp(subject.Loop, subject.Admitting, settings.WarmUp, settings.Batch);
                    if (subject.Exhausted is { } exhausted)
                    {
                        Measure.WarmUp(subject.Loop, exhausted, settings.WarmUp, settings.Batch);
                    }

                    Measure.OnThreads(1, subject.Loop, subject.Shared, settings.WarmUp / 2, settings.Batch);
                }
            }

            foreach (Subject subject in subjects)
            {
                subject.AdmitOperations = Measure.Calibrate(subject.Loop, subject.Admitting, settings.SingleThreadRound);
                if (subject.Exhausted is { } exhausted)
                {
                    subject.RejectOperations = Measure.Calibrate(subject.Loop, exhausted, settings.SingleThreadRound);
                }
            }

            for (int round = 0; round < settings.Rounds; round++)
            {
                for (int i = 0; i < subjects.Count; i++)
                {
                    Subject subject = subjects[(i + round) % subjects.Count];
                    subject.MeasureRound(settings);
                }

                Progress($"round {round + 1}/{settings.Rounds} done: "
                    + string.Join(", ", subjects.Select(s => $"{s.Name} {s.Admit[^1].NanosecondsPerOperation:F1} ns")));
            }
        }
        finally
        {
            foreach (Subject subject in subjects)
            {
                subject.Dispose();
            }
        }

        var rows = subjects.Select(s => s.Summarize()).ToList();
        subjects.Clear(); // disposed above: let their limiters go before the partition section reads memory
        PartitionResult? partitions = settings.PartitionRounds > 0 && settings.PartitionHotRounds > 0
            ? new PartitionHarness(settings, Progress).Run()
            : null;
        Policies.PolicyResult? policy = settings.PolicyRounds > 0
            ? Policies.PolicyHarness.Run(settings.PolicyRounds, settings.SingleThreadRound, settings.ThreadedRound, Progress)
            : null;
        Progress("estimator simulation: max_tokens, learned and exact reservations on a virtual clock");
        EstimatorResult estimator = EstimatorSimulation.Run(new EstimatorSettings());
        Progress($"estimator simulation done in {estimator.Duration.TotalMilliseconds:F0} ms");
        Redis.RedisResult? redis = RunRedis();
        machine = machine with { LoadAverageAtEnd = MachineInfo.LoadAverage() };
        return new CompareResult(machine, settings, rows, partitions, _clock.Elapsed) { Estimator = estimator, Policy = policy, Redis = redis };
    }

    /// <summary>The short Redis section on a redis-server of its own, when one is on PATH (else skipped, and said so).</summary>
    private Redis.RedisResult? RunRedis()
    {
        bool installed = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Any(directory => File.Exists(Path.Combine(directory, "redis-server")));
        if (!installed)
        {
            Progress("redis: no redis-server on PATH, section skipped");
            return null;
        }

        using var server = new RateEngine.Redis.Tests.Support.RedisServer();
        return Redis.RedisHarness.Run(server.Endpoint, Redis.RedisBenchSettings.ForCompare(settings.IsSmoke), Progress);
    }

    private void Progress(string message) => Console.WriteLine($"[{_clock.Elapsed.TotalSeconds,6:F1}s] {message}");

    private static string Ms(TimeSpan span) => $"{span.TotalMilliseconds:F0} ms";

    /// <summary>One row of the table: a limiter (or the ceiling), its limiters and its samples.</summary>
    private sealed class Subject : IDisposable
    {
        private Subject(string name, LimiterKind? kind, Func<RateLimiter, long, long> loop, RateLimiter admitting, RateLimiter? exhausted, RateLimiter shared)
        {
            Name = name;
            Kind = kind;
            Loop = loop;
            Admitting = admitting;
            Exhausted = exhausted;
            Shared = shared;
        }

        public string Name { get; }

        public LimiterKind? Kind { get; }

        public Func<RateLimiter, long, long> Loop { get; }

        /// <summary>Single-thread admit path.</summary>
        public RateLimiter Admitting { get; }

        /// <summary>Single-thread reject path; none for the ceiling.</summary>
        public RateLimiter? Exhausted { get; }

        /// <summary>The one limiter the threaded runs share (admit path).</summary>
        public RateLimiter Shared { get; }

        public long AdmitOperations { get; set; }

        public long RejectOperations { get; set; }

        public List<Sample> Admit { get; } = [];

        public List<Sample> Reject { get; } = [];

        public List<Sample> OneThread { get; } = [];

        public List<Sample> TwoThreads { get; } = [];

        public static Subject ForLimiter(LimiterKind kind) => new(
            kind.ShortName(), kind, Loops.For(kind), LimiterSetup.CreateAdmitting(kind), LimiterSetup.CreateExhausted(kind), LimiterSetup.CreateAdmitting(kind));

        public static Subject Ceiling()
        {
            var counter = new SharedCounter();
            return new Subject("Interlocked ceiling", null, (_, count) => Loops.Increment(counter, count), null!, null, null!);
        }

        public void MeasureRound(CompareSettings settings)
        {
            Sample admit = Measure.OnThisThread(Loop, Admitting, AdmitOperations);
            Expect(admit, admitting: true, "admit path, 1 thread");
            Admit.Add(admit);

            if (Exhausted is not null)
            {
                Sample reject = Measure.OnThisThread(Loop, Exhausted, RejectOperations);
                Expect(reject, admitting: false, "reject path, 1 thread");
                Reject.Add(reject);
            }

            Sample one = Measure.OnThreads(1, Loop, Shared, settings.ThreadedRound, settings.Batch);
            Expect(one, admitting: true, "shared limiter, 1 thread");
            OneThread.Add(one);

            Sample two = Measure.OnThreads(2, Loop, Shared, settings.ThreadedRound, settings.Batch);
            Expect(two, admitting: true, "shared limiter, 2 threads");
            TwoThreads.Add(two);
        }

        public CompareRow Summarize() => new(
            Name,
            Kind,
            Stat.Of(Admit.Select(s => s.NanosecondsPerOperation)),
            Reject.Count > 0 ? Stat.Of(Reject.Select(s => s.NanosecondsPerOperation)) : null,
            Stat.Of(OneThread.Select(s => s.OperationsPerSecond)),
            Stat.Of(TwoThreads.Select(s => s.OperationsPerSecond)),
            BytesPerOperation(Admit),
            Reject.Count > 0 ? BytesPerOperation(Reject) : null,
            BytesPerOperation(TwoThreads),
            Admit.Sum(s => s.Operations) + Reject.Sum(s => s.Operations) + OneThread.Sum(s => s.Operations) + TwoThreads.Sum(s => s.Operations))
        {
            TwoThreadRounds = [.. TwoThreads.Select(s => s.OperationsPerSecond)],
        };

        public void Dispose()
        {
            Admitting?.Dispose();
            Exhausted?.Dispose();
            Shared?.Dispose();
        }

        private static double BytesPerOperation(List<Sample> samples) =>
            (double)samples.Sum(s => s.AllocatedBytes) / samples.Sum(s => s.Operations);

        private void Expect(Sample sample, bool admitting, string what)
        {
            long expected = admitting ? sample.Operations : 0;
            Check.That(
                sample.Acquired == expected,
                $"{Name}, {what}: {sample.Acquired} of {sample.Operations} attempts admitted, expected {expected}. "
                + "The benchmark would measure the wrong path; fix the limiter options in Subjects/LimiterSetup.cs.");
        }
    }
}
