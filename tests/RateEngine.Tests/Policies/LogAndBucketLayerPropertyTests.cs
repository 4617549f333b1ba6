using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Policies;

/// <summary>
/// The sliding-window log and the token bucket as policy layers, which the policy decides after the layers that roll back
/// exactly (keyed before global): over random requests and time, every decision is the one the single limiters' reference
/// models make together (admitted exactly when all four layers have room), a request refused by a layer decided later
/// leaves nothing on the log and the bucket (their rollback), and the logs' usage is the models'. The period-ledger model
/// of <see cref="RatePolicyPropertyTests"/> has no place for either algorithm, so this is their all-or-nothing check.
/// </summary>
public class LogAndBucketLayerPropertyTests
{
    private const int GateLimit = 40;
    private const int LogLimit = 3;
    private const int BucketLimit = 2;
    private const int GlobalLogLimit = 4;
    private static readonly TimeSpan GateWindow = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan LogWindow = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan BucketPeriod = TimeSpan.FromSeconds(4);
    private static readonly TimeSpan GlobalLogWindow = TimeSpan.FromSeconds(5);
    private static readonly string[] Users = ["ann", "bob", "cy"];

    [Property(MaxTest = 300)]
    public Property RandomRequests_DecideAsTheModelsTogether_AndARefusalLeavesNothingBehind() => Prop.ForAll(Steps(), steps =>
    {
        var time = new FakeTimeProvider();
        using RatePolicy<string> policy = new RatePolicyBuilder<string>()
            .UseTimeProvider(time)
            .AddLayer("log", user => user, PolicyRule.SlidingWindowLog(LogWindow, LogLimit))
            .AddLayer("bucket", user => user, PolicyRule.TokenBucket(BucketLimit, 1, BucketPeriod))
            .AddGlobalLayer("global log", PolicyRule.SlidingWindowLog(GlobalLogWindow, GlobalLogLimit))
            .AddGlobalLayer("gate", PolicyRule.FixedWindow(GateWindow, GateLimit))
            .Build();
        var gate = new ReferenceModel(new LimiterSpec(LimiterKind.Fixed, GateLimit, GateWindow.Ticks));
        var logs = Users.ToDictionary(user => user, _ => new ReferenceModel(new LimiterSpec(LimiterKind.Log, LogLimit, LogWindow.Ticks)));
        var buckets = Users.ToDictionary(user => user, _ => new ReferenceModel(new LimiterSpec(LimiterKind.Bucket, BucketLimit, BucketPeriod.Ticks, TokensPerPeriod: 1)));
        var globalLog = new ReferenceModel(new LimiterSpec(LimiterKind.Log, GlobalLogLimit, GlobalLogWindow.Ticks));
        long now = 0;
        foreach ((int userIndex, long advance) in steps)
        {
            time.Advance(TimeSpan.FromTicks(advance));
            now += advance;
            string user = Users[userIndex];
            bool[] room = [gate.Admits(now, 1), logs[user].Admits(now, 1), buckets[user].Admits(now, 1), globalLog.Admits(now, 1)];
            long[] usedBefore = Usage(policy, user);

            using PolicyLease lease = policy.Acquire(user, RequestCost.None);

            string at = $"{user} at {TimeSpan.FromTicks(now)} (room: gate, log, bucket, global log = {string.Join(", ", room)})";
            Assert.True(lease.IsAcquired == room.All(free => free), $"{at}: admitted {lease.IsAcquired}");
            if (lease.IsAcquired)
            {
                gate.Record(now, 1);
                logs[user].Record(now, 1);
                buckets[user].Record(now, 1);
                globalLog.Record(now, 1);
            }
            else
            {
                Assert.Equal(usedBefore, Usage(policy, user)); // every layer that reserved before the refusal gave it back
            }

            Assert.Equal(LogLimit - logs[user].Available(now), policy.GetUsage(user, "log").Used);
            Assert.Equal(GlobalLogLimit - globalLog.Available(now), policy.GetUsage(user, "global log").Used);
        }
    });

    private static long[] Usage(RatePolicy<string> policy, string user) =>
        [.. new[] { "gate", "log", "bucket", "global log" }.Select(layer => policy.GetUsage(user, layer).Used)];

    /// <summary>
    /// Requests by one of three users, each after 0 to 3 s (half of them at the same instant as the one before): about 80 a
    /// minute, so the bucket (1 per 4 s) often refuses after the log admitted and the global log (4 per 5 s) after both.
    /// </summary>
    private static Arbitrary<(int User, long Advance)[]> Steps() =>
        Gen.ArrayOf(
            Gen.Choose(0, Users.Length - 1).SelectMany(
                _ => Gen.Frequency((1, Gen.Constant(0L)), (1, Gen.Choose(1, 3_000).Select(ms => ms * TimeSpan.TicksPerMillisecond))),
                (user, advance) => (user, advance)))
        .Select(steps => steps.Take(120).ToArray())
        .ToArbitrary();
}
