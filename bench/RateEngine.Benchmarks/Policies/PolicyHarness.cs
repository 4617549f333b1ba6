using System.Diagnostics;
using System.Threading.RateLimiting;
using RateEngine.Benchmarks.Compare;

namespace RateEngine.Benchmarks.Policies;

/// <summary>One subject's figures over the rounds.</summary>
internal sealed record PolicyRow(string Name, Stat Nanoseconds, Stat TwoThreadOpsPerSecond, double BytesPerOperation, long Operations);

/// <summary>The layered-policy section: the in-box chain, RateEngine's acquire, and RateEngine's acquire with reconcile.</summary>
/// <summary>The policy's figures, and the single-thread ns/op of both sides on <see cref="PolicySubjects.CachedUsers"/> users (state in cache).</summary>
/// <remarks>
/// <see cref="InBoxBytesPerUser"/> and <see cref="PolicyBytesPerUser"/>: each side's resident state on 10k users, per user,
/// after one pass over the requests (every key and (user, tool) pair the measured runs use, before any counter rollover);
/// <see cref="KeyBytesPerUser"/>: the key strings (IP and user) both sides read.
/// </remarks>
internal sealed record PolicyResult(
    PolicyRow InBox,
    PolicyRow Acquire,
    PolicyRow AcquireReconcile,
    Stat CachedInBox,
    Stat CachedAcquire,
    int Rounds,
    TimeSpan Duration,
    double InBoxBytesPerUser,
    double PolicyBytesPerUser,
    double KeyBytesPerUser)
{
    public double SingleThreadRatio => InBox.Nanoseconds.Median / Acquire.Nanoseconds.Median;

    public double TwoThreadRatio => Acquire.TwoThreadOpsPerSecond.Median / InBox.TwoThreadOpsPerSecond.Median;
}

/// <summary>
/// Measures a five-layer policy against five in-box limiters chained, on 10k users: ns/op on one thread and total ops/s of
/// two threads on the one shared policy, in interleaved rounds (rotated order), after two warm-up passes. Then the same on
/// 100 users, one thread: with every key's state in the cache, what each side costs in compute alone, which bounds the
/// ratio a lighter memory footprint can reach on 10k users.
/// </summary>
internal static class PolicyHarness
{
    public static PolicyResult Run(int rounds, TimeSpan singleRound, TimeSpan threadedRound, Action<string> progress)
    {
        var clock = Stopwatch.StartNew();
        (PolicyRow inBox, PolicyRow acquire, PolicyRow reconcile) = RunOn(PolicySubjects.Users, rounds, singleRound, threadedRound, progress);
        (PolicyRow cachedInBox, PolicyRow cachedAcquire, _) = RunOn(PolicySubjects.CachedUsers, rounds, singleRound, threadedRound: TimeSpan.Zero, progress);
        progress("layered policy: resident bytes per user");
        BenchRequest[] requests = PolicySubjects.Requests();
        long keyBytes = requests.Select(r => r.Ip).Concat(requests.Select(r => r.User)).Distinct().Sum(StringBytes);
        double chainBytes = ResidentBytesPerUser(PolicySubjects.InBoxChain, (chain, cursor) => PolicyLoops.InBox(chain, cursor, requests.Length), requests);
        double policyBytes = ResidentBytesPerUser(PolicySubjects.RateEngine, (policy, cursor) => PolicyLoops.Acquire(policy, cursor, requests.Length), requests);
        return new PolicyResult(
            inBox, acquire, reconcile, cachedInBox.Nanoseconds, cachedAcquire.Nanoseconds, rounds, clock.Elapsed,
            chainBytes, policyBytes, (double)keyBytes / PolicySubjects.Users);
    }

    /// <summary>A string's size on a 64-bit runtime: header, method table, length, the characters and a terminator, in 8-byte steps.</summary>
    private static long StringBytes(string text) => (8 + 8 + 4 + 2L * (text.Length + 1) + 7) / 8 * 8;

    /// <summary>What a new subject keeps after one pass over <paramref name="requests"/>, per user (a full collection before and after).</summary>
    private static double ResidentBytesPerUser<T>(Func<T> create, Func<T, PolicyCursor, long> pass, BenchRequest[] requests)
        where T : IDisposable
    {
        long before = GC.GetTotalMemory(forceFullCollection: true);
        T subject = create();
        pass(subject, new PolicyCursor(requests, 0));
        long after = GC.GetTotalMemory(forceFullCollection: true);
        GC.KeepAlive(subject);
        subject.Dispose();
        return (after - before) / (double)PolicySubjects.Users;
    }

    /// <summary>The three subjects on <paramref name="users"/> users; no 2-thread runs when <paramref name="threadedRound"/> is zero.</summary>
    private static (PolicyRow InBox, PolicyRow Acquire, PolicyRow AcquireReconcile) RunOn(
        int users, int rounds, TimeSpan singleRound, TimeSpan threadedRound, Action<string> progress)
    {
        BenchRequest[] requests = PolicySubjects.Requests(userCount: users);
        using RatePolicy<BenchRequest> policy = PolicySubjects.RateEngine();
        using RatePolicy<BenchRequest> reconciling = PolicySubjects.RateEngine();
        using PartitionedRateLimiter<BenchRequest> chain = PolicySubjects.InBoxChain();
        Subject[] subjects =
        [
            new("in-box CreateChained (5 partitioned limiters)", (cursor, ops) => PolicyLoops.InBox(chain, cursor, ops)),
            new("RateEngine RatePolicy (5 layers), acquire", (cursor, ops) => PolicyLoops.Acquire(policy, cursor, ops)),
            new("RateEngine RatePolicy (5 layers), acquire + reconcile", (cursor, ops) => PolicyLoops.AcquireReconcile(reconciling, cursor, ops)),
        ];

        for (int pass = 1; pass <= 2; pass++)
        {
            foreach (Subject subject in subjects)
            {
                progress($"layered policy, {users:N0} users, warm-up {pass}/2: {subject.Name}");
                var cursor = new PolicyCursor(requests, 0);
                Measure.WarmUp((_, ops) => subject.Loop(cursor, ops), null!, singleRound, 10_000);
                if (threadedRound > TimeSpan.Zero)
                {
                    subject.Threaded(requests, threadedRound / 2);
                }
            }
        }

        foreach (Subject subject in subjects)
        {
            var cursor = new PolicyCursor(requests, 0);
            subject.Operations = Measure.Calibrate((_, ops) => subject.Loop(cursor, ops), null!, singleRound);
        }

        for (int round = 0; round < rounds; round++)
        {
            for (int i = 0; i < subjects.Length; i++)
            {
                Subject subject = subjects[(i + round) % subjects.Length];
                subject.MeasureRound(requests, threadedRound, round);
            }

            progress($"layered policy, {users:N0} users, round {round + 1}/{rounds}: "
                + string.Join(", ", subjects.Select(s => $"{s.Name} {s.Single[^1].NanosecondsPerOperation:F0} ns")));
        }

        return (subjects[0].Summarize(), subjects[1].Summarize(), subjects[2].Summarize());
    }

    private sealed class Subject(string name, Func<PolicyCursor, long, long> loop)
    {
        public string Name { get; } = name;

        public Func<PolicyCursor, long, long> Loop { get; } = loop;

        public long Operations { get; set; }

        public List<Sample> Single { get; } = [];

        public List<Sample> Two { get; } = [];

        public Sample Threaded(BenchRequest[] requests, TimeSpan duration)
        {
            Sample sample = Measure.OnThreads(2, (cursor, ops) => Loop(cursor, ops), t => new PolicyCursor(requests, t * requests.Length / 2), duration, 1_000);
            Check.That(sample.Acquired == sample.Operations, $"{Name}: a request was refused in a 2-thread run");
            return sample;
        }

        public void MeasureRound(BenchRequest[] requests, TimeSpan threadedRound, int round)
        {
            var cursor = new PolicyCursor(requests, round * 7_919 % requests.Length);
            Sample single = Measure.OnThisThread((_, ops) => Loop(cursor, ops), null!, Operations);
            Check.That(single.Acquired == single.Operations, $"{Name}: a request was refused");
            Single.Add(single);
            if (threadedRound > TimeSpan.Zero)
            {
                Two.Add(Threaded(requests, threadedRound));
            }
        }

        public PolicyRow Summarize() => new(
            Name,
            Stat.Of(Single.Select(s => s.NanosecondsPerOperation)),
            Two.Count > 0 ? Stat.Of(Two.Select(s => s.OperationsPerSecond)) : new Stat(0, 0, 0), // no 2-thread runs
            Single.Sum(s => (double)s.AllocatedBytes) / Single.Sum(s => s.Operations),
            Single.Sum(s => s.Operations) + Two.Sum(s => s.Operations));
    }
}
