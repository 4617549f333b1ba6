using System.Diagnostics;
using System.Runtime.CompilerServices;
using RateEngine.Benchmarks.Subjects.Partitions;

namespace RateEngine.Benchmarks.Compare;

/// <summary>
/// The partition section of the compare mode: RateEngine's partitioned limiters against <c>PartitionedRateLimiter.Create</c>
/// over the in-box limiters, for int, IPv4-string and IPv6-string keys. Per pair: resident bytes per key and first-touch
/// rate (one run: a fresh limiter, <see cref="CompareSettings.PartitionKeys"/> new keys, one attempt each, on this thread),
/// and hot-key throughput (2 threads, random keys among <see cref="PartitionSetup.HotKeys"/>).
/// </summary>
/// <remarks>
/// <para>Resident bytes: <c>GC.GetTotalMemory(true)</c> before the limiter is created and after its keys were touched, with
/// the limiter alive; so the figure holds everything the limiter keeps per key (state, table, and for the in-box one its
/// heartbeat's list of partitions) plus its fixed cost over the keys. The key strings are made before the first reading,
/// so they are not in it: "with key strings" adds their measured size, which is what a server whose only reference to a
/// key string is the limiter's would hold.</para>
/// <para>Rounds visit every pair in an order rotated by one per round, as the single-limiter rounds do; the report takes
/// the median round.</para>
/// </remarks>
internal sealed class PartitionHarness(CompareSettings settings, Action<string> progress)
{
    /// <summary>After the in-box limiter's last new key, how long to let its 100 ms heartbeat catch up before reading memory.</summary>
    public static readonly TimeSpan HeartbeatSettle = TimeSpan.FromMilliseconds(250);

    public PartitionResult Run()
    {
        int keyCount = settings.PartitionKeys;
        progress($"partitions: making {keyCount:N0} keys of each kind");
        var keyBytes = new Dictionary<PartitionKeyKind, double>();
        int[] ints = MakeKeys(PartitionKeyKind.Int, () => PartitionKeys.Ints(keyCount, seed: 1), keyBytes);
        string[] ipv4 = MakeKeys(PartitionKeyKind.IPv4, () => PartitionKeys.IPv4(keyCount, seed: 2), keyBytes);
        string[] ipv6 = MakeKeys(PartitionKeyKind.IPv6, () => PartitionKeys.IPv6(keyCount, seed: 3), keyBytes);
        progress($"partitions: key strings take {keyBytes[PartitionKeyKind.IPv4]:F1} B (IPv4) and {keyBytes[PartitionKeyKind.IPv6]:F1} B (IPv6) each; "
            + $"average length {ipv4.Average(k => k.Length):F1} and {ipv6.Average(k => k.Length):F1} characters");

        var pairs = new List<Pair>();
        foreach (PartitionFamily family in settings.PartitionFamilies)
        {
            foreach (PartitionKeyKind kind in PartitionKeyKinds.All)
            {
                pairs.Add(new Pair(family, kind, Subject(PartitionSide.Inbox), Subject(PartitionSide.Engine)));

                PartitionSubject Subject(PartitionSide side) => kind switch
                {
                    PartitionKeyKind.Int => PartitionSubject.Create(family, side, kind, ints),
                    PartitionKeyKind.IPv4 => PartitionSubject.Create(family, side, kind, ipv4),
                    _ => PartitionSubject.Create(family, side, kind, ipv6),
                };
            }
        }

        Measurement[] measurements = [.. pairs.SelectMany(p => new[] { p.Inbox, p.Engine })];
        int warmUpKeys = Math.Min(keyCount, 20_000);
        for (int pass = 1; pass <= 2; pass++)
        {
            foreach (Measurement m in measurements)
            {
                progress($"partitions: warm-up {pass}/2: {m.Name}");
                WarmUpFirstTouch(m.Subject, warmUpKeys);
                HotSample(m, settings.PartitionWarmUp / 2);
            }
        }

        int rounds = Math.Max(settings.PartitionRounds, settings.PartitionHotRounds);
        for (int round = 0; round < rounds; round++)
        {
            for (int i = 0; i < measurements.Length; i++)
            {
                Measurement m = measurements[(i + round) % measurements.Length];
                if (round < settings.PartitionHotRounds)
                {
                    m.Hot2Threads.Add(HotSample(m, settings.ThreadedRound));
                }

                if (round < settings.PartitionRounds)
                {
                    m.FirstTouch.Add(FirstTouch(m.Subject, keyCount));
                }
            }

            progress($"partitions: round {round + 1}/{rounds} done (RateEngine × in-box): " + string.Join(", ", pairs.Select(p =>
                $"{p.Family.Name()}/{p.KeyKind.Name()}"
                + (round < settings.PartitionRounds ? $" first touch {p.Engine.FirstTouch[^1].KeysPerSecond / p.Inbox.FirstTouch[^1].KeysPerSecond:F1}×" : "")
                + (round < settings.PartitionHotRounds ? $" hot {p.Engine.Hot2Threads[^1].OperationsPerSecond / p.Inbox.Hot2Threads[^1].OperationsPerSecond:F1}×" : ""))));
        }

        GC.KeepAlive(ints);
        GC.KeepAlive(ipv4);
        GC.KeepAlive(ipv6);
        return new PartitionResult(
            keyCount,
            keyBytes,
            [.. pairs.Select(p => new PartitionRow(p.Family, p.KeyKind, p.Inbox.Summarize(), p.Engine.Summarize()))]);
    }

    /// <summary>Makes one kind's keys and records the bytes each key object takes (0 for ints, which are stored inline).</summary>
    private static TKey[] MakeKeys<TKey>(PartitionKeyKind kind, Func<TKey[]> make, Dictionary<PartitionKeyKind, double> keyBytes)
    {
        long before = GC.GetTotalMemory(forceFullCollection: true);
        TKey[] keys = make();
        long after = GC.GetTotalMemory(forceFullCollection: true);
        long array = 24 + ((long)Unsafe.SizeOf<TKey>() * keys.Length);
        keyBytes[kind] = typeof(TKey).IsValueType ? 0 : Math.Max(0, (double)(after - before - array) / keys.Length);
        return keys;
    }

    /// <summary>Fresh limiters, <paramref name="keys"/> new keys each, until the warm-up time is spent: tier-1 code for the
    /// loop and for every path a new key takes (lookup, insert, shard growth).</summary>
    private void WarmUpFirstTouch(PartitionSubject subject, int keys)
    {
        long start = Stopwatch.GetTimestamp();
        do
        {
            using FirstTouchRun run = subject.StartFirstTouch();
            long acquired = run.Touch(0, keys);
            Check.That(acquired == keys, $"{Describe(subject)}: warm-up admitted {acquired} of {keys} new keys");
        }
        while (Stopwatch.GetElapsedTime(start) < settings.PartitionWarmUp / 2);
    }

    /// <summary>2 threads on a new limiter that holds the hot keys (made outside the timed run, disposed after it).</summary>
    private static Sample HotSample(Measurement m, TimeSpan duration)
    {
        using HotKeyTarget hot = m.Subject.CreateHot(PartitionSetup.HotKeys);
        Sample sample = Measure.OnThreads(2, static (body, count) => body(count), t => hot.Worker(seed: 1_000 + t), duration, 1_000);
        Check.That(
            sample.Acquired == sample.Operations,
            $"{m.Name}, hot keys: {sample.Acquired} of {sample.Operations} attempts admitted; the limit must never be reached");
        return sample;
    }

    private FirstTouchSample FirstTouch(PartitionSubject subject, int keys)
    {
        long before = GC.GetTotalMemory(forceFullCollection: true);
        using FirstTouchRun run = subject.StartFirstTouch();
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        long start = Stopwatch.GetTimestamp();
        long acquired = run.Touch(0, keys);
        TimeSpan elapsed = Stopwatch.GetElapsedTime(start);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        if (subject.Side == PartitionSide.Inbox)
        {
            Thread.Sleep(HeartbeatSettle);
        }

        long after = GC.GetTotalMemory(forceFullCollection: true);
        Check.That(acquired == keys, $"{Describe(subject)}: {acquired} of {keys} new keys admitted");
        Check.That(
            run.PartitionCount is null || run.PartitionCount == keys,
            $"{Describe(subject)}: the limiter holds {run.PartitionCount} keys after {keys} new ones (refused or evicted keys would skew the memory figure)");
        GC.KeepAlive(run);
        return new FirstTouchSample(keys, elapsed, (double)(after - before) / keys, (double)allocated / keys);
    }

    private static string Describe(PartitionSubject s) => $"{s.LimiterName}, {s.KeyKind.Name()} keys";

    private sealed record Pair(PartitionFamily Family, PartitionKeyKind KeyKind, Measurement Inbox, Measurement Engine)
    {
        public Pair(PartitionFamily family, PartitionKeyKind keyKind, PartitionSubject inbox, PartitionSubject engine)
            : this(family, keyKind, new Measurement(inbox), new Measurement(engine))
        {
        }
    }

    private sealed class Measurement(PartitionSubject subject)
    {
        public PartitionSubject Subject { get; } = subject;

        public string Name => Describe(Subject);

        public List<FirstTouchSample> FirstTouch { get; } = [];

        public List<Sample> Hot2Threads { get; } = [];

        public PartitionStats Summarize() => new(
            Stat.Of(FirstTouch.Select(s => s.ResidentBytesPerKey)),
            Stat.Of(FirstTouch.Select(s => s.KeysPerSecond)),
            FirstTouch.Average(s => s.AllocatedBytesPerKey),
            Stat.Of(Hot2Threads.Select(s => s.OperationsPerSecond)),
            (double)Hot2Threads.Sum(s => s.AllocatedBytes) / Hot2Threads.Sum(s => s.Operations));
    }
}
