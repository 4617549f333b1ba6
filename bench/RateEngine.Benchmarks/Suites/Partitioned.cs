using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using RateEngine.Benchmarks.Subjects.Partitions;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Partitioned limiters: RateEngine's <c>PartitionedLimiter.Create*</c> against the in-box <c>PartitionedRateLimiter.Create</c>
/// over the in-box limiter of the same family (the Baseline of each category), for int, IPv4-string and IPv6-string keys.
/// </summary>
/// <remarks>
/// <para><b>FirstTouch*</b>: one invocation touches <see cref="PartitionSetup.FirstTouchKeys"/> new keys (one
/// <c>AttemptAcquire</c> + <c>Dispose</c> each) on a limiter made fresh by the iteration setup, after a full collection;
/// so Mean is the time per new key and Allocated the bytes allocated per new key. BenchmarkDotNet runs each first-touch
/// invocation alone in its iteration (it does so whenever an iteration setup applies).</para>
/// <para><b>Hot*</b>: 2 threads (<see cref="ThreadTeam"/>) on one limiter that already holds <see cref="PartitionSetup.HotKeys"/>
/// keys, each thread visiting them in its own random order; <see cref="HotOperations"/> attempts per invocation over both
/// threads, so Op/s is total throughput. <b>*PerCore_Hot</b> is RateEngine's limiter with per-core blocks for hot keys
/// (<c>PartitionedLimiterOptions.PerCoreReservation</c>), made once per process like the others, so its keys are promoted
/// during the warm-up and the measured iterations see them hot.</para>
/// <para>Options and keys are those of the compare mode (<see cref="PartitionSetup"/>). Every attempt must be admitted, and
/// RateEngine's limiter must hold every new key; otherwise the global cleanup fails the benchmark. Resident bytes per key
/// are measured by the compare mode only.</para>
/// </remarks>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory, BenchmarkLogicalGroupRule.ByParams)]
[CategoriesColumn]
public class Partitioned
{
    /// <summary>Hot-key attempts per invocation, over both threads.</summary>
    public const int HotOperations = 1 << 18;

    private const int Threads = 2;

    private const string FirstTouchFixed = "FirstTouchFixed";
    private const string FirstTouchBucket = "FirstTouchBucket";
    private const string FirstTouchSliding = "FirstTouchSliding";

    private readonly PartitionSubject?[] _subjects = new PartitionSubject?[Slots];
    private readonly FirstTouchRun?[] _runs = new FirstTouchRun?[Slots];
    private readonly bool[] _touched = new bool[Slots];
    private readonly HotKeyTarget?[] _hot = new HotKeyTarget?[Slots];
    private readonly Action<int>?[] _hotBodies = new Action<int>?[Slots];
    private readonly HotKeyTarget?[] _perCore = new HotKeyTarget?[PartitionFamilies.All.Length];
    private readonly Action<int>?[] _perCoreBodies = new Action<int>?[PartitionFamilies.All.Length];
    private ThreadTeam? _team;
    private long _wrongPath;

    private static int Slots => PartitionFamilies.All.Length * 2;

    /// <summary>New keys per first-touch invocation; the smoke run lowers it.</summary>
    internal static int FirstTouchKeyCount { get; set; } = PartitionSetup.FirstTouchKeys;

    [Params("int", "IPv4", "IPv6")]
    public string Keys { get; set; } = "int";

    [GlobalSetup]
    public void Setup()
    {
        int count = Math.Max(FirstTouchKeyCount, PartitionSetup.HotKeys);
        PartitionKeyKind kind = Enum.Parse<PartitionKeyKind>(Keys, ignoreCase: true);
        int[]? ints = kind == PartitionKeyKind.Int ? PartitionKeys.Ints(count, seed: 1) : null;
        string[]? strings = kind switch
        {
            PartitionKeyKind.IPv4 => PartitionKeys.IPv4(count, seed: 2),
            PartitionKeyKind.IPv6 => PartitionKeys.IPv6(count, seed: 3),
            _ => null,
        };

        _team = new ThreadTeam(Threads);
        foreach (PartitionFamily family in PartitionFamilies.All)
        {
            foreach (PartitionSide side in new[] { PartitionSide.Inbox, PartitionSide.Engine })
            {
                int slot = Slot(family, side);
                PartitionSubject subject = ints is not null
                    ? PartitionSubject.Create(family, side, kind, ints)
                    : PartitionSubject.Create(family, side, kind, strings!);
                _subjects[slot] = subject;
                (_hot[slot], _hotBodies[slot]) = HotTarget(subject);
            }

            PartitionSubject perCore = ints is not null
                ? PartitionSubject.CreatePerCore(family, kind, ints)
                : PartitionSubject.CreatePerCore(family, kind, strings!);
            (_perCore[(int)family], _perCoreBodies[(int)family]) = HotTarget(perCore);
        }
    }

    /// <summary>A limiter holding the hot keys, and one team member's share of an invocation on it.</summary>
    private (HotKeyTarget Target, Action<int> Body) HotTarget(PartitionSubject subject)
    {
        HotKeyTarget hot = subject.CreateHot(PartitionSetup.HotKeys);
        Func<long, long>[] workers = [.. Enumerable.Range(0, Threads).Select(t => hot.Worker(seed: 1_000 + t))];
        const long share = HotOperations / Threads;
        return (hot, member =>
        {
            long acquired = workers[member](share);
            if (acquired != share)
            {
                Interlocked.Add(ref _wrongPath, share - acquired);
            }
        });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _team?.Dispose();
        _team = null;
        DisposeRuns();
        for (int i = 0; i < Slots; i++)
        {
            _hot[i]?.Dispose();
            _hot[i] = null;
            _hotBodies[i] = null;
            _subjects[i] = null;
        }

        for (int i = 0; i < _perCore.Length; i++)
        {
            _perCore[i]?.Dispose();
            _perCore[i] = null;
            _perCoreBodies[i] = null;
        }

        long wrong = Interlocked.Exchange(ref _wrongPath, 0);
        Check.That(wrong == 0, $"Partitioned ({Keys} keys): {wrong} attempt(s) were refused or new keys missing; every attempt must be admitted");
    }

    /// <summary>Fresh limiters for the first-touch benchmarks, on a collected heap.</summary>
    [IterationSetup(Targets = [
        nameof(InBoxFixed_FirstTouch), nameof(Fixed_FirstTouch),
        nameof(InBoxBucket_FirstTouch), nameof(Bucket_FirstTouch),
        nameof(InBoxSliding_FirstTouch), nameof(Counter_FirstTouch)])]
    public void FreshLimiters()
    {
        DisposeRuns();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        for (int i = 0; i < Slots; i++)
        {
            _runs[i] = _subjects[i]!.StartFirstTouch();
        }
    }

    [IterationCleanup(Targets = [
        nameof(InBoxFixed_FirstTouch), nameof(Fixed_FirstTouch),
        nameof(InBoxBucket_FirstTouch), nameof(Bucket_FirstTouch),
        nameof(InBoxSliding_FirstTouch), nameof(Counter_FirstTouch)])]
    public void DisposeLimiters() => DisposeRuns();

    [Benchmark(Baseline = true, OperationsPerInvoke = PartitionSetup.FirstTouchKeys), BenchmarkCategory(FirstTouchFixed)]
    public long InBoxFixed_FirstTouch() => Touch(PartitionFamily.FixedWindow, PartitionSide.Inbox);

    [Benchmark(OperationsPerInvoke = PartitionSetup.FirstTouchKeys), BenchmarkCategory(FirstTouchFixed)]
    public long Fixed_FirstTouch() => Touch(PartitionFamily.FixedWindow, PartitionSide.Engine);

    [Benchmark(Baseline = true, OperationsPerInvoke = PartitionSetup.FirstTouchKeys), BenchmarkCategory(FirstTouchBucket)]
    public long InBoxBucket_FirstTouch() => Touch(PartitionFamily.TokenBucket, PartitionSide.Inbox);

    [Benchmark(OperationsPerInvoke = PartitionSetup.FirstTouchKeys), BenchmarkCategory(FirstTouchBucket)]
    public long Bucket_FirstTouch() => Touch(PartitionFamily.TokenBucket, PartitionSide.Engine);

    [Benchmark(Baseline = true, OperationsPerInvoke = PartitionSetup.FirstTouchKeys), BenchmarkCategory(FirstTouchSliding)]
    public long InBoxSliding_FirstTouch() => Touch(PartitionFamily.SlidingWindow, PartitionSide.Inbox);

    [Benchmark(OperationsPerInvoke = PartitionSetup.FirstTouchKeys), BenchmarkCategory(FirstTouchSliding)]
    public long Counter_FirstTouch() => Touch(PartitionFamily.SlidingWindow, PartitionSide.Engine);

    [Benchmark(Baseline = true, OperationsPerInvoke = HotOperations), BenchmarkCategory("HotFixed")]
    public void InBoxFixed_Hot() => Hot(PartitionFamily.FixedWindow, PartitionSide.Inbox);

    [Benchmark(OperationsPerInvoke = HotOperations), BenchmarkCategory("HotFixed")]
    public void Fixed_Hot() => Hot(PartitionFamily.FixedWindow, PartitionSide.Engine);

    [Benchmark(OperationsPerInvoke = HotOperations), BenchmarkCategory("HotFixed")]
    public void FixedPerCore_Hot() => HotPerCore(PartitionFamily.FixedWindow);

    [Benchmark(Baseline = true, OperationsPerInvoke = HotOperations), BenchmarkCategory("HotBucket")]
    public void InBoxBucket_Hot() => Hot(PartitionFamily.TokenBucket, PartitionSide.Inbox);

    [Benchmark(OperationsPerInvoke = HotOperations), BenchmarkCategory("HotBucket")]
    public void Bucket_Hot() => Hot(PartitionFamily.TokenBucket, PartitionSide.Engine);

    [Benchmark(OperationsPerInvoke = HotOperations), BenchmarkCategory("HotBucket")]
    public void BucketPerCore_Hot() => HotPerCore(PartitionFamily.TokenBucket);

    [Benchmark(Baseline = true, OperationsPerInvoke = HotOperations), BenchmarkCategory("HotSliding")]
    public void InBoxSliding_Hot() => Hot(PartitionFamily.SlidingWindow, PartitionSide.Inbox);

    [Benchmark(OperationsPerInvoke = HotOperations), BenchmarkCategory("HotSliding")]
    public void Counter_Hot() => Hot(PartitionFamily.SlidingWindow, PartitionSide.Engine);

    [Benchmark(OperationsPerInvoke = HotOperations), BenchmarkCategory("HotSliding")]
    public void CounterPerCore_Hot() => HotPerCore(PartitionFamily.SlidingWindow);

    private static int Slot(PartitionFamily family, PartitionSide side) => ((int)family * 2) + (int)side;

    private long Touch(PartitionFamily family, PartitionSide side)
    {
        int slot = Slot(family, side);
        FirstTouchRun run = _runs[slot] ?? throw new InvalidOperationException("no fresh limiter: the iteration setup did not run");
        Check.That(!_touched[slot], "a second invocation on the same limiter would touch known keys: the iteration setup must run before each");
        _touched[slot] = true;

        // Disposed by the iteration cleanup, outside the measurement.
        int keys = FirstTouchKeyCount;
        long acquired = run.Touch(0, keys);
        long missing = keys - acquired + (run.PartitionCount is { } held ? keys - held : 0);
        if (missing != 0)
        {
            Interlocked.Add(ref _wrongPath, Math.Abs(missing));
        }

        return acquired;
    }

    private void Hot(PartitionFamily family, PartitionSide side) => _team!.Run(_hotBodies[Slot(family, side)]!);

    private void HotPerCore(PartitionFamily family) => _team!.Run(_perCoreBodies[(int)family]!);

    private void DisposeRuns()
    {
        for (int i = 0; i < _runs.Length; i++)
        {
            _runs[i]?.Dispose();
            _runs[i] = null;
            _touched[i] = false;
        }
    }
}
