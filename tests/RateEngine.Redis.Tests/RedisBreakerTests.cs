using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Redis.Tests;

/// <summary>The breaker alone, on a fake clock: closed, open for the cool-down, then one probe at a time.</summary>
public sealed class RedisBreakerTests
{
    private static readonly TimeSpan Cooldown = TimeSpan.FromSeconds(1);

    private readonly FakeTimeProvider _clock = new();
    private readonly List<string> _degraded = [];
    private readonly List<long> _recovered = [];

    [Fact]
    public void MayCall_Closed_LetsEveryCallerThrough()
    {
        RedisBreaker breaker = Create();

        Assert.True(breaker.MayCall());
        Assert.True(breaker.MayCall());
        Assert.False(breaker.IsDegraded);
    }

    [Fact]
    public void TripAndClose_Racing_LeaveTheBreakerEitherOpenAndDegradedOrClosedAndNot()
    {
        // A close that read the breaker closed, then cleared "degraded" after a racing trip, left it open (requests answered
        // by the failure mode) while it reported healthy, and logged "recovered" after "unavailable".
        var breaker = new RedisBreaker(_clock, Cooldown, _ => { }, _ => { });
        using var start = new Barrier(2);
        int inconsistent = 0;
        for (int round = 0; round < 20_000; round++)
        {
            var trip = new Thread(() => { start.SignalAndWait(); breaker.Trip("down"); });
            trip.Start();
            start.SignalAndWait();
            breaker.CloseUnlessTrippedSince(breaker.Failures);
            trip.Join();
            if (breaker.IsOpen != breaker.IsDegraded)
            {
                inconsistent++;
            }

            breaker.CloseUnlessTrippedSince(breaker.Failures);
        }

        Assert.Equal(0, inconsistent);
    }

    [Fact]
    public void MayCall_DuringTheCooldown_RefusesEveryone()
    {
        RedisBreaker breaker = Create();
        breaker.Trip("down");

        _clock.Advance(Cooldown - TimeSpan.FromMilliseconds(1));

        Assert.False(breaker.MayCall());
        Assert.False(breaker.MayCall());
        Assert.Equal(["down"], _degraded);
    }

    [Fact]
    public void MayCall_AfterTheCooldown_LetsOneProbeThroughAndRefusesTheOthersForAnotherCooldown()
    {
        RedisBreaker breaker = Create();
        breaker.Trip("down");
        _clock.Advance(Cooldown);

        Assert.True(breaker.MayCall()); // the probe
        Assert.False(breaker.MayCall());
        Assert.False(breaker.MayCall());

        // The probe hangs past the cool-down it claimed: one more caller probes, still one at a time.
        _clock.Advance(Cooldown);
        Assert.True(breaker.MayCall());
        Assert.False(breaker.MayCall());
    }

    [Fact]
    public void IsOpen_AfterTheCooldown_SaysClosedWithoutTakingTheProbe()
    {
        // Background calls ask IsOpen: their success does not close the breaker, so they must leave the probe to a request.
        RedisBreaker breaker = Create();
        breaker.Trip("down");
        Assert.True(breaker.IsOpen);
        _clock.Advance(Cooldown);

        Assert.False(breaker.IsOpen);
        Assert.False(breaker.IsOpen);
        Assert.True(breaker.MayCall()); // still there for a request
        Assert.True(breaker.IsOpen); // and while it runs, background calls wait too
    }

    [Fact]
    public void MayCall_ProbeSucceeds_ClosesForEveryoneAndReportsTheRecoveryOnce()
    {
        RedisBreaker breaker = Create();
        breaker.Trip("down");
        _clock.Advance(Cooldown);
        Assert.True(breaker.MayCall());

        breaker.CloseUnlessTrippedSince(breaker.Failures);

        Assert.True(breaker.MayCall());
        Assert.True(breaker.MayCall());
        Assert.False(breaker.IsDegraded);
        Assert.Equal([1L], _recovered);
    }

    [Fact]
    public void MayCall_ProbeFails_RefusesForAFullCooldownAgain()
    {
        RedisBreaker breaker = Create();
        breaker.Trip("down");
        _clock.Advance(Cooldown);
        Assert.True(breaker.MayCall());

        _clock.Advance(Cooldown / 2);
        breaker.Trip("still down"); // the probe's failure opens it from now, not from the claim

        _clock.Advance(Cooldown - TimeSpan.FromMilliseconds(1));
        Assert.False(breaker.MayCall());
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(breaker.MayCall());
        Assert.Equal(["down"], _degraded); // degraded once, not per failure
        Assert.Equal(2, breaker.Failures);
    }

    [Fact]
    public void ReleaseProbe_OfACancelledProbe_LetsTheNextCallerProbeAtOnce()
    {
        RedisBreaker breaker = Create();
        breaker.Trip("down");
        _clock.Advance(Cooldown);
        Assert.True(breaker.MayCall(out long probe));
        Assert.False(breaker.MayCall());

        breaker.ReleaseProbe(probe); // the probe's caller cancelled: its outcome will never close or trip the breaker

        Assert.True(breaker.MayCall());
        Assert.False(breaker.MayCall());
    }

    [Fact]
    public void ReleaseProbe_ByACallerThatWasNotTheProbe_KeepsTheCooldown()
    {
        // Calls sent before the trip and cancelled during the cool-down (a wave of them while Redis hangs) are not the probe:
        // each one used to let one more call through to the dead server.
        RedisBreaker breaker = Create();
        Assert.True(breaker.MayCall(out long beforeTheTrip)); // closed: no claim
        breaker.Trip("down");
        _clock.Advance(Cooldown);
        Assert.True(breaker.MayCall(out long probe));
        Assert.NotEqual(long.MinValue, probe);

        breaker.ReleaseProbe(beforeTheTrip);
        Assert.False(breaker.MayCall(out long refused));
        breaker.ReleaseProbe(refused);

        Assert.False(breaker.MayCall());
    }

    [Fact]
    public void ReleaseProbe_AfterAFailureSinceTheClaim_KeepsThatCooldown()
    {
        RedisBreaker breaker = Create();
        breaker.Trip("down");
        _clock.Advance(Cooldown);
        Assert.True(breaker.MayCall(out long probe));
        breaker.Trip("still down"); // the probe failed; its caller, cancelled meanwhile, releases its claim

        breaker.ReleaseProbe(probe);

        Assert.False(breaker.MayCall());
        breaker.CloseUnlessTrippedSince(breaker.Failures);
        breaker.ReleaseProbe(probe); // closed: nothing to release
        Assert.True(breaker.MayCall());
        Assert.False(breaker.IsOpen);
    }

    [Fact]
    public void MayCall_ZeroCooldown_LetsEveryCallerTry()
    {
        var breaker = new RedisBreaker(_clock, TimeSpan.Zero, _degraded.Add, _recovered.Add);
        breaker.Trip("down");

        Assert.True(breaker.MayCall());
        Assert.True(breaker.MayCall());
    }

    [Fact]
    public void MayCall_ManyThreadsAfterTheCooldown_ExactlyOneProbes()
    {
        for (int round = 0; round < 200; round++)
        {
            RedisBreaker breaker = Create();
            breaker.Trip("down");
            _clock.Advance(Cooldown);
            using var start = new Barrier(4);
            int passed = 0;
            Thread[] callers = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
            {
                start.SignalAndWait();
                for (int i = 0; i < 100; i++)
                {
                    if (breaker.MayCall())
                    {
                        Interlocked.Increment(ref passed);
                    }
                }
            })).ToArray();
            Array.ForEach(callers, thread => thread.Start());
            Array.ForEach(callers, thread => thread.Join());

            Assert.Equal(1, passed);
        }
    }

    private RedisBreaker Create() => new(_clock, Cooldown, _degraded.Add, _recovered.Add);
}
