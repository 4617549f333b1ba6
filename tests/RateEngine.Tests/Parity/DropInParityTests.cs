using System.Threading.RateLimiting;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Parity;

/// <summary>
/// The drop-ins against the in-box limiters they replace, with <c>AutoReplenishment = false</c> so that both run on
/// the same controlled time: over random sequences of acquires, waits, cancellations and replenishments, the two make
/// the same decisions, complete the same waits and report the same statistics.
/// </summary>
public class DropInParityTests
{
    private const int Cases = 1000;

    // Powers of two: the in-box bucket credits fillRate * elapsed in doubles, which is exact for these.
    private static readonly long[] PeriodTicks = [1L << 16, 1L << 20];

    public abstract record Step;

    public sealed record AcquireStep(int Permits) : Step;

    public sealed record WaitStep(int Permits) : Step;

    public sealed record CancelStep(int Index) : Step;

    /// <summary>Time passes by <c>Periods / 8</c> periods, then <c>TryReplenish</c>.</summary>
    public sealed record ReplenishStep(int EighthsOfPeriod) : Step;

    public sealed record Case(int Limit, int TokensPerPeriod, long Period, int QueueLimit, QueueProcessingOrder Order, Step[] Steps)
    {
        public override string ToString() =>
            $"limit {Limit}, {TokensPerPeriod}/period {Period}, queue {QueueLimit} {Order}: [{string.Join(", ", Steps.Select(s => s.ToString()))}]";
    }

    private static Arbitrary<Case> Cases_(bool bucket) =>
        (from limit in Gen.Choose(1, 10)
         from tokensPerPeriod in bucket ? Gen.Elements(1, 2, 4, 8) : Gen.Constant(1)
         from period in Gen.Elements(PeriodTicks)
         from queueLimit in Gen.Choose(0, 12)
         from order in Gen.Elements(QueueProcessingOrder.OldestFirst, QueueProcessingOrder.NewestFirst)
         from steps in Gen.ArrayOf(Gen.Frequency(
             (5, Gen.Choose(0, limit).Select(n => (Step)new AcquireStep(n))),
             (2, Gen.Choose(0, limit).Select(n => (Step)new WaitStep(n))),
             (1, Gen.Choose(0, 20).Select(i => (Step)new CancelStep(i))),
             (3, Gen.Elements(0, 1, 4, 7, 8, 9, 16, 64).Select(e => (Step)new ReplenishStep(e)))))
         select new Case(limit, tokensPerPeriod, period, queueLimit, order, steps)).ToArbitrary();

    [Property(MaxTest = Cases)]
    public Property FixedWindow_RandomOperationsWithManualReplenishment_MatchesInBox() =>
        Prop.ForAll(Cases_(bucket: false), c =>
        {
            var options = new FixedWindowRateLimiterOptions
            {
                PermitLimit = c.Limit,
                Window = TimeSpan.FromTicks(c.Period),
                QueueLimit = c.QueueLimit,
                QueueProcessingOrder = c.Order,
                AutoReplenishment = false,
            };
            var time = new FakeTimeProvider();
            using var ours = new LockFreeFixedWindowRateLimiter(options, time);
            using var inBox = new FixedWindowRateLimiter(options);
            Run(c, ours, inBox, time);
        });

    [Property(MaxTest = Cases)]
    public Property TokenBucket_RandomOperationsWithManualReplenishment_MatchesInBox() =>
        Prop.ForAll(Cases_(bucket: true), c =>
        {
            var options = new TokenBucketRateLimiterOptions
            {
                TokenLimit = c.Limit,
                TokensPerPeriod = c.TokensPerPeriod,
                ReplenishmentPeriod = TimeSpan.FromTicks(c.Period),
                QueueLimit = c.QueueLimit,
                QueueProcessingOrder = c.Order,
                AutoReplenishment = false,
            };
            var time = new FakeTimeProvider();
            using var ours = new LockFreeTokenBucketRateLimiter(options, time);
            using var inBox = new TokenBucketRateLimiter(options);
            Run(c, ours, inBox, time);
        });

    private static void Run(Case c, RateEngineLimiter ours, ReplenishingRateLimiter inBox, FakeTimeProvider time)
    {
        var driver = new InBoxDriver(inBox);
        var waits = new List<(Task<RateLimitLease> Ours, Task<RateLimitLease> InBox, CancellationTokenSource Source)>();
        int index = 0;
        foreach (Step step in c.Steps)
        {
            string at = $"step {index++} ({step})";
            switch (step)
            {
                case AcquireStep(int permits):
                    using (RateLimitLease a = ours.AttemptAcquire(permits))
                    using (RateLimitLease b = inBox.AttemptAcquire(permits))
                    {
                        Assert.True(b.IsAcquired == a.IsAcquired, $"{at}: in-box {b.IsAcquired}, ours {a.IsAcquired}");
                    }

                    break;
                case WaitStep(int permits):
                    var source = new CancellationTokenSource();
                    waits.Add((ours.AcquireAsync(permits, source.Token).AsTask(), inBox.AcquireAsync(permits, source.Token).AsTask(), source));
                    break;
                case CancelStep(int i) when waits.Count > 0:
                    waits[i % waits.Count].Source.Cancel();
                    break;
                case ReplenishStep(int eighths):
                    TimeSpan elapsed = TimeSpan.FromTicks(c.Period * eighths / 8);
                    time.Advance(elapsed);
                    Assert.True(ours.TryReplenish());
                    driver.Replenish(elapsed);
                    break;
            }

            foreach (var (a, b, _) in waits)
            {
                Assert.True(Outcome(b) == Outcome(a), $"{at}: wait in-box {Outcome(b)}, ours {Outcome(a)}");
            }

            RateLimiterStatistics expected = inBox.GetStatistics()!;
            RateLimiterStatistics actual = ours.GetStatistics()!;
            Assert.True(expected.CurrentAvailablePermits == actual.CurrentAvailablePermits, $"{at}: available in-box {expected.CurrentAvailablePermits}, ours {actual.CurrentAvailablePermits}");
            Assert.True(expected.CurrentQueuedCount == actual.CurrentQueuedCount, $"{at}: queued in-box {expected.CurrentQueuedCount}, ours {actual.CurrentQueuedCount}");
            Assert.True(expected.TotalSuccessfulLeases == actual.TotalSuccessfulLeases, $"{at}: successes in-box {expected.TotalSuccessfulLeases}, ours {actual.TotalSuccessfulLeases}");
            Assert.True(expected.TotalFailedLeases == actual.TotalFailedLeases, $"{at}: failures in-box {expected.TotalFailedLeases}, ours {actual.TotalFailedLeases}");
        }

        foreach (var (_, _, source) in waits)
        {
            source.Dispose();
        }
    }

    private static string Outcome(Task<RateLimitLease> task) =>
        task.Status switch
        {
            TaskStatus.RanToCompletion => task.Result.IsAcquired ? "acquired" : "failed",
            TaskStatus.Canceled => "cancelled",
            _ => task.IsCompleted ? task.Status.ToString() : "pending",
        };
}
