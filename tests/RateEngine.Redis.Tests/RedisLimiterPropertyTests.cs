using System.Threading.RateLimiting;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Redis.Tests.Support;
using RateEngine.Tests.Support;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests;

/// <summary>One step of a generated sequence: acquire, or move the client clock.</summary>
public abstract record ScriptOp;

/// <summary>One script call for <c>Permits</c> (0 asks whether one is free).</summary>
public sealed record AcquireStep(int Permits) : ScriptOp;

/// <summary>Moves the fake client clock forward by whole microseconds.</summary>
public sealed record AdvanceStep(long Microseconds) : ScriptOp;

/// <summary>Moves the clock to the next multiple of <c>Unit</c> (window, segment or period) plus <c>Offset</c> µs (-1, 0, 1).</summary>
public sealed record BoundaryStep(int Offset) : ScriptOp;

/// <summary>One script call by node <c>Node</c> (of two, each on its own client clock) for <c>Permits</c>.</summary>
public sealed record NodeAcquireStep(int Node, int Permits) : ScriptOp;

/// <summary>Moves node <c>Node</c>'s client clock forward by whole microseconds (the other's stays, within two windows).</summary>
public sealed record SkewStep(int Node, long Microseconds) : ScriptOp;

/// <summary>A generated case: the limiter, the clock's start (µs since the Unix epoch) and the steps.</summary>
public sealed record ScriptCase(LimiterSpec Spec, long StartMicroseconds, ScriptOp[] Ops)
{
    public override string ToString() => $"{Spec} start {StartMicroseconds} µs, ops: [{string.Join(", ", Ops.Select(op => op.ToString()))}]";
}

/// <summary>
/// Each algorithm's Lua script on a real Redis, driven by random sequences of acquires and client-clock moves (exact µs on
/// a <see cref="FakeTimeProvider"/> through <see cref="RedisLimiterOptions.ClientClock"/>, across window and segment
/// boundaries), against the core's exact reference model (<see cref="ReferenceModel"/>, in µs): every decision, its
/// stamp, the permits left and a refusal's retry time must equal the model's. A failure prints FsCheck's replay seed and
/// the case.
/// </summary>
/// <remarks>
/// Windows are at least a second: a key's TTL runs on the server's real clock (the time its state can matter on the
/// decisions' clock plus a second), so a case, which takes milliseconds of real time, never sees its state expire.
/// </remarks>
[Collection(RedisCollection.Name)]
public sealed class RedisLimiterPropertyTests : IDisposable
{
    private const int Cases = 200;
    private static readonly long UnixEpochTicks = DateTimeOffset.UnixEpoch.UtcTicks;

    private readonly ConnectionMultiplexer _connection;

    public RedisLimiterPropertyTests(RedisServer server) => _connection = server.Connect();

    public void Dispose() => _connection.Dispose();

    [Property(MaxTest = Cases)]
    public Property FixedWindowScript_RandomOperations_DecidesLikeTheReferenceModel() => Prop.ForAll(Generate(LimiterKind.Fixed), Run);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounterScript_RandomOperations_DecidesLikeTheReferenceModel() => Prop.ForAll(Generate(LimiterKind.Counter), Run);

    [Property(MaxTest = Cases)]
    public Property TokenBucketScript_RandomOperations_DecidesLikeTheReferenceModel() => Prop.ForAll(Generate(LimiterKind.Bucket), Run);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowLogScript_RandomOperations_DecidesLikeTheReferenceModel() => Prop.ForAll(Generate(LimiterKind.Log), Run);

    private static Arbitrary<ScriptCase> Generate(LimiterKind kind) =>
        (from limit in Gen.Choose(1, 8)
         from window in Gen.Elements(1_000_000L, 2_500_000L, 7_000_003L, 60_000_000L)
         from segments in Gen.Choose(1, 5)
         from tokensPerPeriod in Gen.Choose(1, 4)
         from start in Gen.Choose(0, int.MaxValue)
         let spec = new LimiterSpec(kind, limit, window, segments, tokensPerPeriod)
         from ops in Gen.ArrayOf(Gen.Frequency(
             (5, Gen.Choose(0, limit).Select(n => (ScriptOp)new AcquireStep(n))),
             (3, Advance(spec).Select(micros => (ScriptOp)new AdvanceStep(micros))),
             (1, Gen.Choose(-1, 1).Select(offset => (ScriptOp)new BoundaryStep(offset)))))
         select new ScriptCase(spec, 1_796_000_000_000_000L + start, [.. ops.Take(40)])).ToArbitrary();

    private static Gen<long> Advance(LimiterSpec spec) => Gen.Frequency(
        (3, Gen.Choose(0, 3).Select(micros => (long)micros)),
        (4, Gen.Choose(1, (int)(spec.WindowTicks / 2)).Select(micros => (long)micros)),
        (3, Gen.Choose((int)(spec.WindowTicks / 2), (int)Math.Min(int.MaxValue, spec.WindowTicks * 2)).Select(micros => (long)micros)),
        (1, Gen.Choose(1, 3).Select(k => k * spec.FullRefillTicks)),
        (1, Gen.Choose(1, 48).Select(hours => hours * 3_600_000_000L)));

    /// <summary>Runs one case on a fresh key and checks every decision against the model; throws at the first disagreement.</summary>
    private void Run(ScriptCase @case)
    {
        LimiterSpec spec = @case.Spec;
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch + TimeSpan.FromTicks(@case.StartMicroseconds * 10));
        var options = new RedisLimiterOptions
        {
            Connection = _connection,
            KeyPrefix = "property-" + Guid.NewGuid().ToString("N"),
            ClientClock = time,
            SyncTimeout = TimeSpan.FromSeconds(2),
        };
        using PartitionedRateLimiter<string> limiter = Create(spec, options);
        Func<int, Task<RedisResult>> evaluate = Evaluator(limiter);
        var model = new ReferenceModel(spec);
        long unit = spec.Kind == LimiterKind.Counter ? spec.SegmentTicks : spec.WindowTicks;
        for (int step = 0; step < @case.Ops.Length; step++)
        {
            long now = (time.GetUtcNow().UtcTicks - UnixEpochTicks) / 10;
            switch (@case.Ops[step])
            {
                case AdvanceStep(long micros):
                    time.Advance(TimeSpan.FromTicks(micros * 10));
                    break;

                case BoundaryStep(int offset):
                    long next = ((now / unit) + 1) * unit + offset;
                    time.Advance(TimeSpan.FromTicks(Math.Max(0, next - now) * 10));
                    break;

                case AcquireStep(int permits):
                    RedisDecision decision = RedisPartitionedLimiter<string, object>.Decision(evaluate(permits).GetAwaiter().GetResult());
                    long available = model.Available(now);
                    bool admits = model.Admits(now, permits);
                    var expected = new RedisDecision(
                        admits,
                        admits ? 0 : model.TicksUntilAdmitted(now, permits),
                        admits ? available - permits : available,
                        now);
                    if (decision != expected)
                    {
                        throw new InvalidOperationException($"step {step} ({@case.Ops[step]}) at {now} µs: the script answered {decision}, the model {expected}");
                    }

                    if (admits && permits > 0)
                    {
                        model.Record(now, permits);
                    }

                    break;
            }
        }
    }

    [Property(MaxTest = Cases)]
    public Property FixedWindowScript_TwoClientClocksApart_NeverPassesTheCapOnTheKeysTime() => Prop.ForAll(GenerateSkewed(LimiterKind.Fixed), RunSkewed);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowCounterScript_TwoClientClocksApart_NeverPassesTheCapOnTheKeysTime() => Prop.ForAll(GenerateSkewed(LimiterKind.Counter), RunSkewed);

    [Property(MaxTest = Cases)]
    public Property TokenBucketScript_TwoClientClocksApart_NeverPassesTheCapOnTheKeysTime() => Prop.ForAll(GenerateSkewed(LimiterKind.Bucket), RunSkewed);

    [Property(MaxTest = Cases)]
    public Property SlidingWindowLogScript_TwoClientClocksApart_NeverPassesTheCapOnTheKeysTime() => Prop.ForAll(GenerateSkewed(LimiterKind.Log), RunSkewed);

    /// <summary>
    /// Two nodes on one key whose client clocks drift apart and back (either one ahead, by up to two windows): the cases
    /// above move one clock forward only, so the scripts' branches for a caller behind the key's stored window, segment or
    /// newest permit are reached here. Refused callers and callers decided on the key's later time alike, every admission's
    /// stamp lies between its caller's clock and the latest time any node has shown the key, and the stamps keep the
    /// algorithm's guarantee.
    /// </summary>
    private void RunSkewed(ScriptCase @case)
    {
        LimiterSpec spec = @case.Spec;
        FakeTimeProvider[] clocks = [.. Enumerable.Range(0, 2).Select(_ => new FakeTimeProvider(DateTimeOffset.UnixEpoch + TimeSpan.FromTicks(@case.StartMicroseconds * 10)))];
        string prefix = "skewed-" + Guid.NewGuid().ToString("N");
        PartitionedRateLimiter<string>[] nodes = [.. clocks.Select(clock => Create(spec, new RedisLimiterOptions
        {
            Connection = _connection,
            KeyPrefix = prefix,
            ClientClock = clock,
            SyncTimeout = TimeSpan.FromSeconds(2),
        }))];
        try
        {
            Func<int, Task<RedisResult>>[] evaluate = [.. nodes.Select(Evaluator)];
            var admitted = new List<Admitted>();
            long latest = long.MinValue;
            long Now(int node) => (clocks[node].GetUtcNow().UtcTicks - UnixEpochTicks) / 10;
            for (int step = 0; step < @case.Ops.Length; step++)
            {
                switch (@case.Ops[step])
                {
                    case SkewStep(int node, long micros):
                        // One clock moves forward; the other follows when they would be more than two windows apart.
                        clocks[node].Advance(TimeSpan.FromTicks(micros * 10));
                        long lag = Now(node) - Now(1 - node) - (2 * spec.WindowTicks);
                        if (lag > 0)
                        {
                            clocks[1 - node].Advance(TimeSpan.FromTicks(lag * 10));
                        }

                        break;

                    case NodeAcquireStep(int node, int permits):
                        long now = Now(node);
                        latest = Math.Max(latest, now);
                        RedisDecision decision = RedisPartitionedLimiter<string, object>.Decision(evaluate[node](permits).GetAwaiter().GetResult());
                        if (decision.Admitted && permits > 0)
                        {
                            if (decision.StampMicroseconds < now || decision.StampMicroseconds > latest)
                            {
                                throw new InvalidOperationException($"step {step} ({@case.Ops[step]}): stamped {decision.StampMicroseconds} µs, the caller at {now}, the latest clock {latest}");
                            }

                            admitted.Add(new Admitted(decision.StampMicroseconds, permits));
                            if (Guarantee.FindViolation(spec, admitted) is { } violation)
                            {
                                throw new InvalidOperationException($"step {step} ({@case.Ops[step]}): {violation}");
                            }
                        }

                        break;
                }
            }
        }
        finally
        {
            foreach (PartitionedRateLimiter<string> node in nodes)
            {
                node.Dispose();
            }
        }
    }

    private static Arbitrary<ScriptCase> GenerateSkewed(LimiterKind kind) =>
        (from limit in Gen.Choose(1, 8)
         from window in Gen.Elements(1_000_000L, 2_500_000L, 7_000_003L)
         from segments in Gen.Choose(1, 5)
         from tokensPerPeriod in Gen.Choose(1, 4)
         from start in Gen.Choose(0, int.MaxValue)
         let spec = new LimiterSpec(kind, limit, window, segments, tokensPerPeriod)
         from ops in Gen.ArrayOf(Gen.Frequency(
             (5, Gen.Choose(0, 1).SelectMany(_ => Gen.Choose(0, limit), (node, permits) => (ScriptOp)new NodeAcquireStep(node, permits))),
             (3, Gen.Choose(0, 1).SelectMany(_ => Advance(spec), (node, micros) => (ScriptOp)new SkewStep(node, Math.Min(micros, 3 * window))))))
         select new ScriptCase(spec, 1_796_000_000_000_000L + start, [.. ops.Take(40)])).ToArbitrary();

    private static PartitionedRateLimiter<string> Create(LimiterSpec spec, RedisLimiterOptions options)
    {
        TimeSpan window = TimeSpan.FromTicks(spec.WindowTicks * 10);
        return spec.Kind switch
        {
            LimiterKind.Fixed => RedisLimiter.CreateFixedWindow<string>(
                key => key, _ => new FixedWindowRateLimiterOptions { PermitLimit = spec.Limit, Window = window }, options),
            LimiterKind.Counter => RedisLimiter.CreateSlidingWindowCounter<string>(
                key => key, _ => new SlidingWindowCounterRateLimiterOptions { PermitLimit = spec.Limit, Window = window, SegmentsPerWindow = spec.Segments }, options),
            LimiterKind.Bucket => RedisLimiter.CreateTokenBucket<string>(
                key => key, _ => new TokenBucketRateLimiterOptions { TokenLimit = spec.Limit, TokensPerPeriod = spec.TokensPerPeriod, ReplenishmentPeriod = window }, options),
            _ => RedisLimiter.CreateSlidingWindowLog<string>(
                key => key, _ => new SlidingWindowLogRateLimiterOptions { PermitLimit = spec.Limit, Window = window }, options),
        };
    }

    /// <summary>The limiter's own script call for key "k" (the decision with its stamp, as the stress tests read it).</summary>
    private static Func<int, Task<RedisResult>> Evaluator(PartitionedRateLimiter<string> limiter) => limiter switch
    {
        RedisPartitionedLimiter<string, FixedWindowRateLimiterOptions> fixedWindow => permits => fixedWindow.Evaluate("k", permits),
        RedisPartitionedLimiter<string, SlidingWindowCounterRateLimiterOptions> counter => permits => counter.Evaluate("k", permits),
        RedisPartitionedLimiter<string, TokenBucketRateLimiterOptions> bucket => permits => bucket.Evaluate("k", permits),
        RedisPartitionedLimiter<string, SlidingWindowLogRateLimiterOptions> log => permits => log.Evaluate("k", permits),
        _ => throw new InvalidOperationException("Not a Redis limiter."),
    };
}
