using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Algorithms;
using RateEngine.Limiters;
using RateEngine.Tests.Support;
using Xunit.Sdk;

namespace RateEngine.Tests.Properties;

/// <summary>Runs generated scenarios against real limiters on a <see cref="FakeTimeProvider"/> and checks them.</summary>
public static class ScenarioRunner
{
    /// <summary>
    /// The guarantee of src/DESIGN.md holds for every admission, whatever the mix of acquires, waits, cancellations,
    /// refunds and clock moves (both ways); statistics agree with the leases handed out; disposal completes every wait.
    /// </summary>
    public static void NeverExceedsGuarantee(Scenario scenario)
    {
        var time = new FakeTimeProvider();
        RateEngineLimiter limiter = scenario.Spec.Create(time);
        int[] core = Steer(limiter);
        // Each admission as the limiter stamped it (what a refund names) and at the limiter's clock when it was handed out
        // (what the guarantee is checked on): a checker that trusted the stamps would accept a permit used in one window
        // and stamped in another.
        var admissions = new List<Admitted>();
        var uses = new List<Admitted>();
        Admission? lastObserved = null;
        long observedPermits = 0;
        limiter.AdmissionObserver = a =>
        {
            admissions.Add(new Admitted(a.Stamp, a.Permits));
            uses.Add(new Admitted(limiter.Clock.Now(), a.Permits));
            lastObserved = a;
            observedPermits += a.Permits;
        };

        var reservations = new List<RateEngineLimiter.Reservation>();
        long successfulLeases = 0;
        long grantedPermits = 0; // what the leases handed out say: the guarantee is checked on the observer's record, which must hold all of it
        var waits = new List<(Task<RateLimitLease> Task, CancellationTokenSource Source, int Permits)>();
        foreach (Op op in scenario.Ops)
        {
            switch (op)
            {
                case Acquire(int permits):
                    using (RateLimitLease lease = limiter.AttemptAcquire(permits))
                    {
                        successfulLeases += lease.IsAcquired ? 1 : 0;
                        grantedPermits += lease.IsAcquired ? permits : 0;
                    }

                    break;
                case Reserve(int permits):
                    lastObserved = null;
                    if (limiter.TryReserve(limiter.Clock.Now(), permits, out RateEngineLimiter.Reservation? reservation))
                    {
                        successfulLeases++;
                        grantedPermits += permits;
                        Assert.Equal(lastObserved, reservation.Admission);
                        reservations.Add(reservation);
                    }

                    break;
                case Advance(long ticks):
                    time.Advance(TimeSpan.FromTicks(ticks));
                    break;
                case Rewind(long ticks):
                    time.AdjustTime(time.GetUtcNow() - TimeSpan.FromTicks(ticks));
                    break;
                case Wait(int permits):
                    var source = new CancellationTokenSource();
                    waits.Add((limiter.AcquireAsync(permits, source.Token).AsTask(), source, permits));
                    break;
                case MoveToCore(int to):
                    core[0] = to;
                    break;
                case Cancel(int index) when waits.Count > 0:
                    waits[index % waits.Count].Source.Cancel();
                    break;
                case RefundLast when reservations.Count > 0:
                    Refund(reservations[^1], admissions, uses);
                    break;
                case RefundAgain(int index) when reservations.Count > 0:
                    Refund(reservations[index % reservations.Count], admissions, uses);
                    break;
            }
        }

        successfulLeases += waits.Count(w => w.Task.IsCompletedSuccessfully && w.Task.Result.IsAcquired);
        grantedPermits += waits.Where(w => w.Task.IsCompletedSuccessfully && w.Task.Result.IsAcquired).Sum(w => (long)w.Permits);
        Assert.Equal(successfulLeases, limiter.GetStatistics()!.TotalSuccessfulLeases);
        Assert.Equal(grantedPermits, observedPermits); // every permit handed out was recorded, so the check below sees it

        limiter.Dispose();
        Assert.All(waits, w => Assert.True(w.Task.IsCompleted, "a wait was left pending after Dispose"));
        foreach (var (_, source, _) in waits)
        {
            source.Dispose();
        }

        string? violation = Guarantee.FindViolation(scenario.Spec, uses);
        if (violation is not null)
        {
            throw new XunitException(violation);
        }
    }

    /// <summary>
    /// For a limiter with per-core blocks: its requests start from the block the returned cell names (0 until a
    /// <see cref="MoveToCore"/> changes it), not from the processor's, so that one thread visits every block.
    /// </summary>
    private static int[] Steer(RateEngineLimiter limiter)
    {
        int[] core = [0];
        if (limiter.Host is IPerCoreHost host)
        {
            host.ChooseStripe = () => core[0];
        }

        return core;
    }

    /// <summary>
    /// Refunds a reservation, which may have ended already: then it must free nothing (a double refund that freed
    /// permits would also show as a guarantee violation, since its admission is removed from the record only once).
    /// </summary>
    private static void Refund(RateEngineLimiter.Reservation reservation, List<Admitted> admissions, List<Admitted> uses)
    {
        bool wasEnded = reservation.IsEnded;
        if (reservation.Refund())
        {
            Assert.False(wasEnded, "an ended reservation freed permits");
            int index = admissions.LastIndexOf(new Admitted(reservation.Admission.Stamp, reservation.Admission.Permits));
            admissions.RemoveAt(index);
            uses.RemoveAt(index);
        }
    }

    /// <summary>
    /// On a forward-moving clock with nothing queued, every decision, every available-permit count and every
    /// RETRY_AFTER equals the exact reference model's: the limiter admits exactly when there is room.
    /// </summary>
    public static void DecidesLikeReferenceModel(Scenario scenario)
    {
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = scenario.Spec.Create(time);
        var model = new ReferenceModel(scenario.Spec);
        long now = 0;
        foreach (Op op in scenario.Ops)
        {
            switch (op)
            {
                case Advance(long ticks):
                    time.Advance(TimeSpan.FromTicks(ticks));
                    now += ticks;
                    break;
                case Acquire(int permits):
                    long available = limiter.GetStatistics()!.CurrentAvailablePermits;
                    using (RateLimitLease lease = limiter.AttemptAcquire(permits))
                    {
                        model.Check(now, permits, available, lease, "limiter");
                    }

                    break;
            }
        }
    }

    /// <summary>
    /// A limiter with per-core blocks on a forward-moving clock with nothing queued: it admits only where the exact model
    /// has room, and refuses only where the model's room is within the slack <see cref="PerCoreReservationOptions"/>
    /// documents: each of the shared state and the blocks holds less than the request, plus (for the counter) the
    /// leftovers of blocks whose segment ended, at most one block per core per segment of the window (a block keeps at most
    /// MaxBlockSize - 1 beyond its request, plus what the block before held when a request did not fit it). With blocks of one
    /// permit (none at all) every decision, available count and RETRY_AFTER is the model's. For the bucket, whose blocks
    /// lose the tokens a core did not use by their slot, and the log, whose blocks' leftovers stay in the log for its
    /// counted span (two block periods longer than the window), only the first half is checked: it never admits where the
    /// model refuses (their refusals are checked in their contract tests).
    /// </summary>
    public static void DecidesWithinPerCoreSlack(Scenario scenario)
    {
        LimiterSpec spec = scenario.Spec;
        var time = new FakeTimeProvider();
        using RateEngineLimiter limiter = spec.Create(time);
        int[] core = Steer(limiter);
        var model = new ReferenceModel(spec);
        long stripes = (limiter.Host as IPerCoreHost)?.StripeCount ?? 1; // a log without blocks is the plain log
        long now = 0;

        // A block that did not fit a request kept less than it: less than the largest request of its segment. A counter's
        // blocks of a segment still count for the S segments after it, so the slack follows the window, not the whole run.
        var largestBySegment = new Dictionary<long, long>();
        long segmentTicks = spec.Kind == LimiterKind.Counter ? spec.SegmentTicks : spec.WindowTicks;
        foreach (Op op in scenario.Ops)
        {
            switch (op)
            {
                case Advance(long ticks):
                    time.Advance(TimeSpan.FromTicks(ticks));
                    now += ticks;
                    break;
                case MoveToCore(int to):
                    core[0] = to;
                    break;
                case Acquire(int permits) when spec.PerCoreBlock == 1:
                    long available = limiter.GetStatistics()!.CurrentAvailablePermits;
                    using (RateLimitLease lease = limiter.AttemptAcquire(permits))
                    {
                        model.Check(now, permits, available, lease, "limiter without blocks");
                    }

                    break;
                case Acquire(int permits):
                    long segment = now / segmentTicks;
                    largestBySegment[segment] = Math.Max(largestBySegment.GetValueOrDefault(segment, 1), permits);
                    using (RateLimitLease lease = limiter.AttemptAcquire(permits))
                    {
                        long room = model.Available(now);
                        if (lease.IsAcquired)
                        {
                            Assert.True(model.Admits(now, permits), $"at {now}: AttemptAcquire({permits}) admitted with {room} permits of room");
                            if (permits > 0)
                            {
                                model.Record(now, permits);
                            }
                        }
                        else if (spec.Kind is LimiterKind.Fixed or LimiterKind.Counter)
                        {
                            long scattered = (stripes + 1) * (Math.Max(1, permits) - 1);
                            // A block's leftover: what it kept beyond its request, plus what was left of the block before when
                            // a request did not fit it (merged into the new block of the same segment); per core, for each
                            // segment the window still counts.
                            long heldBack = 0;
                            for (long counted = segment - spec.Segments; spec.Kind == LimiterKind.Counter && counted <= segment; counted++)
                            {
                                heldBack += largestBySegment.TryGetValue(counted, out long largest)
                                    ? stripes * ((spec.PerCoreBlock - 1) + (largest - 1))
                                    : 0;
                            }

                            Assert.True(
                                room <= scattered + heldBack,
                                $"at {now}: AttemptAcquire({permits}) refused with {room} permits of room (slack {scattered} + {heldBack})");
                        }
                    }

                    break;
            }
        }
    }

    /// <summary>
    /// An acquire followed at once by its refund leaves the limiter indistinguishable from a twin that never saw it:
    /// same decisions, available permits, idle durations and retry delays, through clock moves both ways.
    /// </summary>
    /// <remarks>
    /// Idle durations are compared exactly while the clock has moved (either way) less than the epochs' wrap range (2^33 windows or
    /// segments, src/DESIGN.md); beyond it a stale epoch reads as one of its aliases, so "idle since" is only known to be
    /// long ago, and the twins must then agree on whether they are idle, not on since when. (A refund whose acquire rolled
    /// the segment over leaves the old count recorded in history, where the twin keeps it in its current word; past the
    /// wrap range the two read different aliases.)
    /// </remarks>
    public static void RefundIsIndistinguishable(Scenario scenario)
    {
        var timeA = new FakeTimeProvider();
        var timeB = new FakeTimeProvider();
        long moved = 0; // clock movement either way: a rewind does not make stale epochs fresh again
        long wrapRange = (1L << 33) * (scenario.Spec.Kind == LimiterKind.Counter ? scenario.Spec.SegmentTicks : scenario.Spec.WindowTicks);
        using RateEngineLimiter refunded = scenario.Spec.Create(timeA);
        using RateEngineLimiter untouched = scenario.Spec.Create(timeB);
        foreach (Op op in scenario.Ops)
        {
            switch (op)
            {
                case Advance(long ticks):
                    timeA.Advance(TimeSpan.FromTicks(ticks));
                    timeB.Advance(TimeSpan.FromTicks(ticks));
                    moved += ticks;
                    break;
                case Rewind(long ticks):
                    timeA.AdjustTime(timeA.GetUtcNow() - TimeSpan.FromTicks(ticks));
                    timeB.AdjustTime(timeB.GetUtcNow() - TimeSpan.FromTicks(ticks));
                    moved += ticks;
                    break;
                case AcquireThenRefund(int permits):
                    if (refunded.TryReserve(refunded.Clock.Now(), permits, out RateEngineLimiter.Reservation? reservation))
                    {
                        Assert.True(reservation.Refund(), "an immediate refund must succeed");
                        Assert.False(reservation.Refund(), "a second refund of one reservation must free nothing");
                    }

                    break;
                case Acquire(int permits):
                    using (RateLimitLease a = refunded.AttemptAcquire(permits))
                    using (RateLimitLease b = untouched.AttemptAcquire(permits))
                    {
                        Assert.Equal(b.IsAcquired, a.IsAcquired);
                        a.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryA);
                        b.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryB);
                        Assert.Equal(retryB, retryA);
                    }

                    break;
            }

            Assert.Equal(untouched.GetStatistics()!.CurrentAvailablePermits, refunded.GetStatistics()!.CurrentAvailablePermits);
            if (moved < wrapRange)
            {
                Assert.Equal(untouched.IdleDuration, refunded.IdleDuration);
            }
            else
            {
                Assert.Equal(untouched.IdleDuration.HasValue, refunded.IdleDuration.HasValue);
            }
        }
    }
}
