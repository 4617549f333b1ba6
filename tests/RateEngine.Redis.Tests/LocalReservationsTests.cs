using Microsoft.Extensions.Time.Testing;
using RateEngine.Redis.Hybrid;

namespace RateEngine.Redis.Tests;

/// <summary>A node's blocks alone, without Redis: its reservations and returns are recorded, not sent.</summary>
public sealed class LocalReservationsTests : IAsyncDisposable
{
    private const long Period = 7;

    private readonly FakeTimeProvider _time = new();
    private readonly List<(string Key, long Period, long Permits)> _returned = [];
    private readonly LocalReservations<Key> _blocks;

    public LocalReservationsTests() => _blocks = new LocalReservations<Key>(
        new RedisHybridOptions(),
        _time,
        reserve: _ => throw new InvalidOperationException("no reservation is expected"),
        giveBack: (key, period, permits) =>
        {
            _returned.Add((key.PartitionKey, period, permits));
            return Task.CompletedTask;
        },
        mayCall: () => true);

    public ValueTask DisposeAsync() => _blocks.DisposeAsync();

    [Fact]
    public void GiveBack_OfAHigherCapsPermitsWhileALowerCapsBlockIsLive_GoesToRedisNotIntoThatBlock()
    {
        // Tiers mix on one key: the free tier's block (cap 10) is live when a pro request (cap 100) refunds 80. In that
        // block, free requests would use them past their own cap.
        var key = new Key("ann");
        LocalBlock free = Block(granted: 5, remaining: 0, limit: 10);
        key.Block = free;

        _blocks.GiveBack(key, Block(granted: 80, remaining: 0, limit: 100), 80);

        Assert.Equal(0, Volatile.Read(ref free.Remaining));
        Assert.Equal([("ann", Period, 80L)], _returned);
    }

    [Fact]
    public void GiveBack_OfALowerCapsPermitsWhileAHigherCapsBlockIsLive_JoinsIt()
    {
        // Permits counted within the lower cap are within the higher one too.
        var key = new Key("ann");
        LocalBlock pro = Block(granted: 80, remaining: 3, limit: 100);
        key.Block = pro;

        _blocks.GiveBack(key, Block(granted: 5, remaining: 0, limit: 10), 5);

        Assert.Equal(8, Volatile.Read(ref pro.Remaining));
        Assert.Empty(_returned);
    }

    [Fact]
    public void GiveBack_WhileTheKeysBlockHasEnded_RevivesTheRefundAndReturnsTheEndedBlocksLeftover()
    {
        // A counter's ended block: its segment still counts on Redis for the rest of the window, so its 4 go back there.
        var key = new Key("ann");
        LocalBlock ended = new(8, 4, _time.GetTimestamp() + 1, Period - 1, refusedNeed: 0, limit: 10);
        key.Block = ended;
        _time.Advance(TimeSpan.FromSeconds(1));

        _blocks.GiveBack(key, Block(granted: 5, remaining: 0, limit: 10), 5);

        Assert.Equal(5, Volatile.Read(ref key.Block.Remaining));
        Assert.Equal(Period, key.Block.Period);
        Assert.Equal([("ann", Period - 1, 4L)], _returned);
    }

    [Fact]
    public void TryTake_FromABlockWhosePeriodEndedBeforeTheClockRead_ReturnsThePermitsItTook()
    {
        // The take wins the CAS, then the clock says the period is over: the permit is not used, and Redis (where a
        // counter's segment still counts it for the rest of its window) gets it back, as the block's other leftovers.
        var key = new Key("ann");
        key.Block = new LocalBlock(8, 4, _time.GetTimestamp() + 1, Period, refusedNeed: 0, limit: 10);
        _time.Advance(TimeSpan.FromSeconds(1));

        Assert.Null(_blocks.TryTake(key, 3, out TimeSpan? refusedFor));

        Assert.Null(refusedFor);
        Assert.Equal(0, Volatile.Read(ref key.Block.Remaining)); // the dead block's last permit goes with them
        Assert.Equal([("ann", Period, 4L)], _returned);

        // Callers that meet the dead block until the next one lands send nothing more (each sent its own return before).
        Assert.Null(_blocks.TryTake(key, 1, out _));
        Assert.Single(_returned);
    }

    [Fact]
    public async Task Finish_AGrantForAForgottenKeyWhileRedisIsAway_SendsNoReturn()
    {
        // Background calls skip the breaker's cool-downs: the idle sweep and dispose send nothing while Redis is known to be
        // away, and a grant that lands in a key the sweep forgot must not either (it stays counted there: stricter).
        var returned = new List<long>();
        await using var blocks = new LocalReservations<Key>(
            new RedisHybridOptions(),
            _time,
            reserve: _ => throw new InvalidOperationException("sent by the test"),
            giveBack: (_, _, permits) =>
            {
                returned.Add(permits);
                return Task.CompletedTask;
            },
            mayCall: () => false);
        Key key = blocks.KeyOf("ann", static (name, _) => new Key(name), 0);
        LocalReservations<Key>.Ticket ticket = blocks.Begin(key, need: 1, out Task<LocalBlock> refill)!;
        key.Forgotten = true;

        blocks.Finish(ticket, new Reservation(Granted: 5, RetryAfter: 0, ValidFor: 1_000_000, Period: Period));

        await refill;
        Assert.Empty(returned);
    }

    [Fact]
    public async Task ReturnIdle_ADebtAddedBetweenTheSweepsCheckAndItsForgetting_IsPassedOn()
    {
        // A stream's overrun is charged to an idle key just after the sweep found that it owed nothing: the charger read the
        // key's flag before the sweep set it, so it kept the debt there. The sweep must see it once the key is out of its
        // table and pass it on; a forgotten key's debt would never be sent.
        var passedOn = new List<OwingKey>();
        await using var blocks = new LocalReservations<OwingKey>(
            new RedisHybridOptions { IdleReturn = TimeSpan.FromSeconds(1) },
            _time,
            reserve: _ => throw new InvalidOperationException("no reservation is expected"),
            giveBack: (_, _, _) => Task.CompletedTask,
            mayCall: () => false,
            passDebtOn: passedOn.Add);
        OwingKey key = blocks.KeyOf("ann", static (name, _) => new OwingKey(name) { ChargeJustAfterTheCheck = 5 }, 0);
        OwingKey quiet = blocks.KeyOf("bob", static (name, _) => new OwingKey(name), 0);

        _time.Advance(TimeSpan.FromSeconds(1)); // the sweep: both keys idle and owing nothing when it looks

        Assert.Equal(0, blocks.KeyCount);
        Assert.True(key.Forgotten);
        Assert.Equal([key], passedOn);
        Assert.Equal(5, key.Debt);
        Assert.DoesNotContain(quiet, passedOn);
    }

    private LocalBlock Block(long granted, long remaining, long limit) =>
        new(granted, remaining, _time.GetTimestamp() + _time.TimestampFrequency * 60, Period, refusedNeed: 0, limit);

    private sealed class Key(string name) : LocalKey(name)
    {
        public override string RedisKey => "redis:" + PartitionKey;
    }

    /// <summary>A key with a debt, and a charge that lands right after the sweep's check, as one from another thread can.</summary>
    private sealed class OwingKey(string name) : LocalKey(name)
    {
        public override string RedisKey => "redis:" + PartitionKey;

        public long Debt;

        public long ChargeJustAfterTheCheck;

        public override bool MayForget
        {
            get
            {
                bool owesNothing = Volatile.Read(ref Debt) == 0;
                Interlocked.Add(ref Debt, Interlocked.Exchange(ref ChargeJustAfterTheCheck, 0));
                return owesNothing;
            }
        }
    }
}
