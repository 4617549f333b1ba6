using FsCheck;
using FsCheck.Fluent;
using RateEngine.Tests.Support;
using System.Threading.RateLimiting;

namespace RateEngine.Tests.Properties;

/// <summary>One step of a generated operation sequence.</summary>
public abstract record Op;

/// <summary><c>AttemptAcquire(Permits)</c>.</summary>
public sealed record Acquire(int Permits) : Op;

/// <summary>Moves the fake clock forward.</summary>
public sealed record Advance(long Ticks) : Op;

/// <summary>Moves the fake clock backwards (<c>FakeTimeProvider.AdjustTime</c>).</summary>
public sealed record Rewind(long Ticks) : Op;

/// <summary><c>AcquireAsync(Permits)</c> with a token that a later <see cref="Cancel"/> may cancel.</summary>
public sealed record Wait(int Permits) : Op;

/// <summary>Cancels the pending wait at <c>Index % pending</c>.</summary>
public sealed record Cancel(int Index) : Op;

/// <summary>The lock-free acquire that returns a reservation (what layered policies use).</summary>
public sealed record Reserve(int Permits) : Op;

/// <summary>Refunds the most recent reservation.</summary>
public sealed record RefundLast : Op;

/// <summary>Refunds the reservation at <c>Index % reservations</c> again: a reservation ends once, so this frees nothing.</summary>
public sealed record RefundAgain(int Index) : Op;

/// <summary>Per-core blocks: the next requests start from block <c>Core</c> (modulo the blocks), as if the thread moved to that core.</summary>
public sealed record MoveToCore(int Core) : Op;

/// <summary>An acquire immediately undone by a refund (applied to one of two twin limiters).</summary>
public sealed record AcquireThenRefund(int Permits) : Op;

public sealed record Scenario(LimiterSpec Spec, Op[] Ops)
{
    public override string ToString() => $"{Spec} ops: [{string.Join(", ", Ops.Select(o => o.ToString()))}]";
}

/// <summary>FsCheck generators for limiter configurations and operation sequences.</summary>
public static class Generators
{
    public static Gen<LimiterSpec> Spec(LimiterKind kind, bool queueing) => Spec(kind, queueing, Gen.Choose(1, 12), Gen.Constant(0));

    /// <summary>
    /// A spec whose limiter hands permits out from 1, 2 or 4 per-core blocks of at most 1 (none), 2, 4 or 64 permits; limits
    /// reach 200 so that blocks form (near the cap a block takes at most 1 / (2 * cores) of what is left).
    /// </summary>
    public static Gen<LimiterSpec> PerCoreSpec(LimiterKind kind, bool queueing) =>
        from spec in Spec(kind, queueing, Gen.Frequency((1, Gen.Choose(1, 12)), (2, Gen.Choose(13, 200))), Gen.Elements(1, 2, 4, 64))
        from stripes in Gen.Elements(1, 2, 4)
        select spec with { PerCoreStripes = stripes };

    private static Gen<LimiterSpec> Spec(LimiterKind kind, bool queueing, Gen<int> limits, Gen<int> perCoreBlock) =>
        from limit in limits
        from window in kind == LimiterKind.Log ? Gen.Elements(10L, 60L, 97L, 1000L, 2048L) : Gen.Elements(10L, 60L, 97L, 1000L)
        from segments in Gen.Choose(1, 6)
        from tokensPerPeriod in Gen.Choose(1, 5)
        from queueLimit in queueing ? Gen.Choose(0, 12) : Gen.Constant(0)
        from order in Gen.Elements(QueueProcessingOrder.OldestFirst, QueueProcessingOrder.NewestFirst)
        from block in perCoreBlock
        select new LimiterSpec(kind, limit, window, segments, tokensPerPeriod, queueLimit, order, block);

    /// <summary>Everything: acquires, time both ways, waits, cancellations and refunds.</summary>
    public static Arbitrary<Scenario> Everything(LimiterKind kind, bool perCore = false) =>
        (from spec in perCore ? PerCoreSpec(kind, queueing: true) : Spec(kind, queueing: true)
         from ops in Gen.ArrayOf(Gen.Frequency(
             (8, Permits(spec, 0).Select(n => (Op)new Acquire(n))),
             (5, AdvanceTicks(spec).Select(t => (Op)new Advance(t))),
             (1, RewindTicks(spec).Select(t => (Op)new Rewind(t))),
             (3, Permits(spec, 0).Select(n => (Op)new Wait(n))),
             (1, Gen.Choose(0, 50).Select(i => (Op)new Cancel(i))),
             (2, Permits(spec, 1).Select(n => (Op)new Reserve(n))),
             (1, Gen.Constant((Op)new RefundLast())),
             (1, Gen.Choose(0, 50).Select(i => (Op)new RefundAgain(i))),
             (spec.PerCoreBlock > 0 ? 3 : 0, Gen.Choose(0, 3).Select(c => (Op)new MoveToCore(c)))))
         select new Scenario(spec, ops)).ToArbitrary();

    /// <summary>
    /// The per-core log at the edges of its block periods: a small limit, periods of 4 or 8 ticks (windows of 1,024 and
    /// 2,048), one-permit requests on 2 blocks, and time stepping a tick or so either way, or about a window ahead. Blocks
    /// then are used late in their period after an early decision, and (after a step back) early after a late one: the
    /// two ends the log's longer span must cover.
    /// </summary>
    public static Arbitrary<Scenario> LogPeriodEdges() =>
        (from limit in Gen.Choose(4, 24)
         from window in Gen.Elements(1024L, 2048L)
         from block in Gen.Elements(4, 64)
         let spec = new LimiterSpec(LimiterKind.Log, limit, window, PerCoreBlock: block, PerCoreStripes: 2)
         from ops in Gen.ArrayOf(Gen.Frequency(
             (10, Gen.Constant((Op)new Acquire(1))),
             (4, Gen.Choose(1, 3).Select(t => (Op)new Advance(t))),
             (2, Gen.Choose(1, 3).Select(t => (Op)new Rewind(t))),
             (1, Gen.Choose(-8, 8).Select(t => (Op)new Advance(window + t - 8))),
             (3, Gen.Choose(0, 1).Select(c => (Op)new MoveToCore(c)))))
         select new Scenario(spec, ops)).ToArbitrary();

    /// <summary>
    /// The per-core bucket where blocks take their slots a lead ahead: a burst of hundreds to thousands of tokens (so the
    /// lead, at most 1/64 of it, spans several tokens), two or four cores taking one token at a time a little slower than the
    /// refill (a block from a full bucket then needs its lead), on a fast bucket or on one slow enough (3 tokens per 10 s)
    /// that its units are several ticks long, now and then a request for the whole burst (admitted by a
    /// full shared bucket: a block's token then used past its slot would exceed burst + rate * T), a pause of up to a
    /// lead and a block's tokens (past the blocks' slots), a step back, or a long pause (the bucket full again).
    /// </summary>
    public static Arbitrary<Scenario> BucketLeads() =>
        (from limit in Gen.Choose(640, 6_400)
         from window in Gen.Elements(64L, 100L, 1000L, 100_000_000L)
         from tokensPerPeriod in Gen.Choose(1, 5)
         from block in Gen.Elements(4, 64)
         from stripes in Gen.Elements(2, 4)
         let spec = new LimiterSpec(LimiterKind.Bucket, limit, window, TokensPerPeriod: tokensPerPeriod, PerCoreBlock: block, PerCoreStripes: stripes)
         let interval = (int)Math.Max(1, window / tokensPerPeriod)
         from ops in Gen.ArrayOf(Gen.Frequency(
             (12, Gen.Constant((Op)new Acquire(1))),
             (1, Gen.Choose(2, 50).Select(n => (Op)new Acquire(n))),
             (3, Gen.Constant((Op)new Acquire(limit))),
             (8, Gen.Choose(interval, 3 * interval).Select(t => (Op)new Advance(t))),
             (2, Gen.Choose(0, interval).Select(t => (Op)new Advance(t))),
             (2, Gen.Choose(1, (limit / 64) + 64).Select(k => (Op)new Advance((long)k * interval))),
             (1, Gen.Choose(1, interval).Select(t => (Op)new Rewind(t))),
             (1, Gen.Choose(1, 4).Select(k => (Op)new Advance(k * spec.FullRefillTicks))),
             (6, Gen.Choose(0, stripes - 1).Select(c => (Op)new MoveToCore(c)))))
         select new Scenario(spec, ops)).ToArbitrary();

    /// <summary>
    /// Acquires and forward time only: the reference model decides exactly. Not across an idle spell of exactly 2^33
    /// periods (give or take one), which an epoch word misreads as current, stricter than the model (src/DESIGN.md, Bounds):
    /// the guarantee properties cover those steps.
    /// </summary>
    public static Arbitrary<Scenario> Decisions(LimiterKind kind, bool perCore = false) =>
        (from spec in perCore ? PerCoreSpec(kind, queueing: false) : Spec(kind, queueing: false)
         from ops in Gen.ArrayOf(Gen.Frequency(
             (3, Permits(spec, 0).Select(n => (Op)new Acquire(n))),
             (2, AdvanceTicks(spec, aliases: false).Select(t => (Op)new Advance(t))),
             (spec.PerCoreBlock > 0 ? 1 : 0, Gen.Choose(0, 3).Select(c => (Op)new MoveToCore(c)))))
         select new Scenario(spec, ops)).ToArbitrary();

    /// <summary>
    /// Acquires, time, and acquire-then-refund pairs. The clock also moves backwards, except for the counter: an
    /// acquire that starts a new segment moves the counter's current segment for good (other threads may already
    /// decide in it), so after a backwards clock step a refunded acquire still shows as "that segment was reached". Not
    /// across an idle spell of exactly 2^33 periods: the misread it causes (stricter) depends on what the state last held,
    /// so the two limiters may differ there; the guarantee properties cover those steps, refunds included.
    /// </summary>
    public static Arbitrary<Scenario> Refunds(LimiterKind kind) =>
        (from spec in Spec(kind, queueing: false)
         from ops in Gen.ArrayOf(Gen.Frequency(
             (4, Gen.Choose(0, spec.Limit).Select(n => (Op)new Acquire(n))),
             (3, AdvanceTicks(spec, aliases: false).Select(t => (Op)new Advance(t))),
             (kind == LimiterKind.Counter ? 0 : 1, RewindTicks(spec, aliases: false).Select(t => (Op)new Rewind(t))),
             (3, Gen.Choose(1, spec.Limit).Select(n => (Op)new AcquireThenRefund(n)))))
         select new Scenario(spec, ops)).ToArbitrary();

    /// <summary>
    /// Request sizes from <paramref name="least"/> to the limit; with per-core blocks mostly small ones, as a limiter
    /// shared by many threads sees, so that blocks form and are shared out.
    /// </summary>
    private static Gen<int> Permits(LimiterSpec spec, int least) => spec.PerCoreBlock > 0
        ? Gen.Frequency((4, Gen.Choose(least, Math.Min(3, spec.Limit))), (1, Gen.Choose(least, spec.Limit)))
        : Gen.Choose(least, spec.Limit);

    private static Gen<long> AdvanceTicks(LimiterSpec spec, bool aliases = true) => Gen.Frequency(
        (30, Gen.Choose(0, 3).Select(t => (long)t)),
        (40, Gen.Choose(1, (int)spec.WindowTicks / 2).Select(t => (long)t)),
        (20, Gen.Choose((int)spec.WindowTicks / 2, (int)spec.WindowTicks * 2).Select(t => (long)t)),
        (10, Gen.Choose(1, 20).Select(k => k * spec.FullRefillTicks)),
        (1, HugeSteps(spec, aliases)));

    /// <summary>Backward clock steps of any size: within a window, and far beyond any epoch or wrap-around range.</summary>
    private static Gen<long> RewindTicks(LimiterSpec spec, bool aliases = true) => Gen.Frequency(
        (4, Gen.Choose(1, (int)spec.WindowTicks).Select(t => (long)t)),
        (1, HugeSteps(spec, aliases)));

    /// <summary>
    /// Steps far larger than a window: past 2^20 and 2^33 windows (the epochs' lag and wrap ranges), exactly 2^33 windows or
    /// segments give or take one (where an epoch modulo 2^33 aliases an old one: a stale refund or state would match the
    /// current period), and hours of time.
    /// </summary>
    private static Gen<long> HugeSteps(LimiterSpec spec, bool aliases) => Gen.Frequency(
        (1, Gen.Choose(0, 1 << 20).Select(k => spec.WindowTicks * ((1L << 20) + k))),
        (1, Gen.Choose(0, 1 << 20).Select(k => spec.WindowTicks * ((1L << 33) + k))),
        (aliases ? 1 : 0, Gen.Elements(-1L, 0L, 1L).Select(k => spec.WindowTicks * ((1L << 33) + k))),
        (aliases ? 1 : 0, Gen.Elements(-1L, 0L, 1L).Select(k => spec.SegmentTicks * ((1L << 33) + k))),
        (1, Gen.Choose(1, 72).Select(h => h * TimeSpan.TicksPerHour)));
}
