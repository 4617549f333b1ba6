using RateEngine.Algorithms;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Algorithms;

public class SlidingWindowLogTests
{
    [Fact]
    public void Refund_ThenSameTicketTakenAgain_TailWordDiffersSoAStaleTakerCannotWin()
    {
        var log = new SlidingWindowLog(permitLimit: 1, windowTicks: 10);
        LogState state = log.CreateState();
        Assert.True(log.TryAcquire(ref state, 0, 1, out Admission first, out _));
        long seenByStalledTaker = Volatile.Read(ref state.Tail);

        Assert.True(log.Refund(ref state, first));
        Assert.True(log.TryAcquire(ref state, 105, 1, out _, out _));

        // Same ticket number as before the refund, but a stalled taker's CAS on the tail word must fail (ABA).
        Assert.NotEqual(seenByStalledTaker, Volatile.Read(ref state.Tail));
    }

    [Fact]
    public void Refund_TwoInReverseOrderOnOneSlot_SecondKeepsItsPermitsCounted()
    {
        var log = new SlidingWindowLog(permitLimit: 1, windowTicks: 14);
        LogState state = log.CreateState();
        Assert.True(log.TryAcquire(ref state, 57, 1, out _, out _));
        Assert.True(log.TryAcquire(ref state, 73, 1, out Admission at73, out _));
        Assert.True(log.TryAcquire(ref state, 88, 1, out Admission at88, out _));

        Assert.True(log.Refund(ref state, at88));

        // The slot's previous stamp (57) was spent restoring 73: a second exact restore is impossible, so 73 stays.
        Assert.False(log.Refund(ref state, at73));
        Assert.False(log.TryAcquire(ref state, 86, 1, out _, out long retryAfter));
        Assert.Equal(73 + 14 - 86, retryAfter);
        Assert.True(log.TryAcquire(ref state, 87, 1, out _, out _));
    }

    [Fact]
    public async Task GetAvailablePermits_WhileTheNewestTicketIsUnpublished_WaitsForItInsteadOfReadingTheOlderStamp()
    {
        var log = new SlidingWindowLog(permitLimit: 1, windowTicks: 10);
        LogState state = log.CreateState();
        ref LogSlot slot = ref state.Slots[0];
        (long sequence, long stamp) = (slot.Sequence, slot.Stamp);
        Assert.True(log.TryAcquire(ref state, 5, 1, out _, out _));
        (long published, long taken) = (slot.Sequence, slot.Stamp);

        // The winner has moved the tail but not yet written its slot (descheduled between its CAS and its publish).
        (slot.Sequence, slot.Stamp) = (sequence, stamp);
        LogState shared = state;
        using var started = new ManualResetEventSlim();
        Task<(long Available, long RetryAfter)> view = Task.Run(() =>
        {
            LogState mine = shared;
            started.Set();
            return (log.GetAvailablePermits(ref mine, 6), log.GetRetryAfter(ref mine, 6, 1));
        });
        started.Wait();
        await Task.Delay(TimeSpan.FromMilliseconds(50), TimeProvider.System);
        Assert.False(view.IsCompleted, "a view read the full log before its newest ticket was published");

        Volatile.Write(ref shared.Slots[0].Stamp, taken);
        Volatile.Write(ref shared.Slots[0].Sequence, published);
        Assert.Equal((0, 5 + 10 - 6), await view); // full: not the older stamp's free slot
    }

    [Fact]
    public void GetRetryAfter_WhileATakerOverwritesTheSlotItReads_AnswersForATailHeldDuringTheCall()
    {
        // Tickets stamped 10 apart: with the tail at n, one permit waits for ticket n - 10, stamped 10 (n - 10), so a view at
        // time 0 must answer 10 n for some n the tail held during the call. A slot read after a taker overwrote it answers
        // a window late, 10 (n + 10): the queue's wake-up armed that late leaves free permits unserved.
        const int Limit = 10;
        const long Takes = 2_000_000;
        var log = new SlidingWindowLog(permitLimit: Limit, windowTicks: 100);
        var shared = new SharedState(log.CreateState());
        for (int k = 0; k < Limit; k++)
        {
            Assert.True(log.TryAcquire(ref shared.Value, 10 * k, 1, out _, out _));
        }

        long taken = Limit;
        bool refused = false;
        var taker = new Thread(() =>
        {
            for (long k = Limit; k < Limit + Takes && !refused; k++)
            {
                refused = !log.TryAcquire(ref shared.Value, 10 * k, 1, out _, out _);
                Volatile.Write(ref taken, k + 1);
            }
        });
        taker.Start();
        long calls = 0;
        var wrong = new List<string>();
        while (taker.IsAlive)
        {
            long before = Volatile.Read(ref taken);
            long retryAfter = log.GetRetryAfter(ref shared.Value, 0, 1);
            long after = Volatile.Read(ref taken);
            calls++;
            if ((retryAfter < 10 * before || retryAfter > 10 * (after + 1)) && wrong.Count < 5)
            {
                wrong.Add($"{retryAfter} with the tail between {before} and {after + 1}");
            }
        }

        taker.Join();
        Assert.False(refused);
        Assert.True(calls > 0);
        Assert.Empty(wrong);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(5)]
    public void TryAcquire_TicketsWrapManyTimes_DecidesLikeTheReferenceModel(int limit)
    {
        // 4-bit tickets wrap every few admissions: the slot mapping and the publish check must survive it.
        var log = new SlidingWindowLog(limit, windowTicks: 20, ticketBits: 4);
        LogState state = log.CreateState();
        var spec = new LimiterSpec(LimiterKind.Log, limit, WindowTicks: 20);
        var model = new ReferenceModel(spec);
        var random = new Random(limit);
        long now = 0;
        int admitted = 0;
        for (int i = 0; i < 5_000; i++)
        {
            now += random.Next(0, 6);
            int permits = random.Next(1, limit + 1);
            bool expected = model.Admits(now, permits);
            Assert.Equal(model.Available(now), log.GetAvailablePermits(ref state, now));
            Assert.Equal(expected, log.TryAcquire(ref state, now, permits, out Admission admission, out _));
            if (expected)
            {
                admitted++;
                if (random.Next(4) == 0)
                {
                    Assert.True(log.Refund(ref state, admission));
                }
                else
                {
                    model.Record(now, permits);
                }
            }
        }

        Assert.True(admitted > 200);
    }

    /// <summary>One log state that two threads reach by reference (a copy of the struct would copy its tail).</summary>
    private sealed class SharedState(LogState state)
    {
        public LogState Value = state;
    }
}
