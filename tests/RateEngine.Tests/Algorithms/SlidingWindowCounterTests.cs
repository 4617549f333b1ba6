using Microsoft.Extensions.Time.Testing;
using RateEngine.Algorithms;
using RateEngine.Tests.Support;
using RateEngine.Timing;

namespace RateEngine.Tests.Algorithms;

public class SlidingWindowCounterTests
{
    [Theory]
    [InlineData(1L << 21)]
    [InlineData((1L << 32) + 5)] // wraps to a later segment, not a far one
    public void TryAcquire_ClockReadOlderThanTheWordByMoreThanMaxLag_DecidesInTheWordsSegment(long stalledSegments)
    {
        StalledClockRead.IsDecidedInTheWordsPeriod<SlidingWindowCounter, CounterState>(
            clock => new SlidingWindowCounter(permitLimit: 2, segmentTicks: 10, segmentsPerWindow: 2, clock), stalledSegments);
    }

    [Fact]
    public void TryAcquire_StalledBeforeRecordingWhileTheKeyRanOnPastMaxLag_KeepsTheLiveSegmentInItsSlot()
    {
        // A rollover reads the word (segment 0, one permit), then stalls before it records segment 0 while the key runs on
        // for more than 2^20 segments: slot 0 of 3 then holds a live segment j (j mod 3 = 0) with two permits. Modulo 2^33
        // j reads as older than 0, and the stalled recorder wrote (0, 1) over it: j's permits left the window, and the
        // window of segments j .. j + 2 admitted two more.
        var time = new FakeTimeProvider();
        var hook = new HookedClock(time);
        var counter = new SlidingWindowCounter(permitLimit: 2, segmentTicks: 10, segmentsPerWindow: 2, new LimiterClock(hook));
        var box = new StateBox { State = counter.CreateState() };
        Assert.True(counter.TryAcquire(ref box.State, 0, 1, out _, out _));
        long live = 3L << 20;
        hook.OnRead = () =>
        {
            // What other threads did while this one stalled (its next clock read, in the rollover, runs this once).
            Assert.True(counter.TryAcquire(ref box.State, live * 10, 2, out _, out _));
            Assert.False(counter.TryAcquire(ref box.State, (live + 1) * 10, 1, out _, out _)); // rolls over: (j, 2) recorded
            time.Advance(TimeSpan.FromTicks(((live + 1) * 10) + 5));
        };

        counter.TryAcquire(ref box.State, 10, 1, out _, out _); // the stalled thread: a rollover from segment 0

        Assert.False(counter.TryAcquire(ref box.State, (live + 2) * 10, 1, out _, out _)); // j's two still count
    }

    private sealed class StateBox
    {
        public CounterState State;
    }

    /// <summary>A clock that runs <see cref="OnRead"/> once, at the first read after it is set, then reads on.</summary>
    private sealed class HookedClock(FakeTimeProvider inner) : TimeProvider
    {
        public Action? OnRead { get; set; }

        public override long TimestampFrequency => inner.TimestampFrequency;

        public override long GetTimestamp()
        {
            if (OnRead is { } once)
            {
                OnRead = null;
                once();
            }

            return inner.GetTimestamp();
        }
    }

    [Fact]
    public void CreateState_ForAKeyMadeJustBeforeTheEpochsWrap_CountsFromNowsSegment()
    {
        // A permit taken in segment j is back when segment j + 3 begins: 30 ticks (RefillTicks).
        StateMadeBeforeTheWrap.CountsFromNowsPeriod<SlidingWindowCounter, CounterState>(new SlidingWindowCounter(permitLimit: 1, segmentTicks: 10, segmentsPerWindow: 2));
    }

    [Fact]
    public void CreateState_ForAKeyMadeInTheLastSegmentBeforeTheEpochsWrap_CountsItsHistoryAcrossTheWrap()
    {
        var counter = new SlidingWindowCounter(permitLimit: 1, segmentTicks: 10, segmentsPerWindow: 2);
        long wrap = 1L << 33;
        CounterState state = counter.CreateState((wrap - 1) * 10);
        Assert.True(counter.TryAcquire(ref state, (wrap - 1) * 10, 1, out _, out _));

        Assert.False(counter.TryAcquire(ref state, wrap * 10, 1, out _, out _)); // rolls over: that permit is history
        Assert.False(counter.TryAcquire(ref state, (wrap * 10) + 1, 1, out _, out _)); // and stays counted through the segment
        Assert.True(counter.TryAcquire(ref state, (wrap + 2) * 10, 1, out _, out _));
    }

    [Fact]
    public void TryAcquire_SegmentFinishedJustBeforeTheEpochsWrap_StaysCountedInHistory()
    {
        // Its history slot was never written: a zero word, naming segment 0, which segment 2^33 - 11 reads as newer.
        var counter = new SlidingWindowCounter(permitLimit: 1, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        long segment = (1L << 33) - 11;
        Assert.True(counter.TryAcquire(ref state, (1L << 32) * 10, 1, out _, out _));
        Assert.True(counter.TryAcquire(ref state, segment * 10, 1, out _, out _));

        Assert.False(counter.TryAcquire(ref state, (segment + 1) * 10, 1, out _, out _)); // 10 ticks on, in a window of 20
    }

    [Fact]
    public void TryAcquire_SegmentWhoseSlotWasLastWrittenAWrapAgo_StaysCountedInHistory()
    {
        // Segments of 10 ticks, 2 per window, 3 history slots. Slot 0 last holds segment 3; the key stays busy in other
        // slots until segment e = 2^33 + 1, also slot 0, which is 2^33 - 2 segments after 3: modulo 2^33 segment 3 reads
        // as 2 segments newer than e. Recording e's permit must still replace it, or segment e + 1 forgets that permit
        // and admits a second one within the window of 1.
        var counter = new SlidingWindowCounter(permitLimit: 1, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        long e = (1L << 33) + 1;
        Assert.True(counter.TryAcquire(ref state, 3 * 10, 1, out _, out _));
        Assert.False(counter.TryAcquire(ref state, 4 * 10, 1, out _, out _)); // segment 3 goes to slot 0
        Assert.True(counter.TryAcquire(ref state, (1L << 32) * 10, 1, out _, out _)); // slot 1
        Assert.True(counter.TryAcquire(ref state, e * 10, 1, out _, out _));

        Assert.False(counter.TryAcquire(ref state, (e + 1) * 10, 1, out _, out _));
    }

    [Fact]
    public void TryAcquire_RefusedWhileASlotHoldsMoreThanTheCache_RetryAfterIsNotShort()
    {
        // Segments of 1 tick, 2 per window, limit 10. Segment 0's 10 permits are refunded once finished (slot and cache to 0);
        // then a recorder that read the word before the refund puts its larger count back into slot 0 (larger wins), which
        // the cache no longer counts. Segment 1 fills, and a refusal there must wait for segment 1's own permits (tick 4):
        // walked against the cache's shortfall, slot 0's phantom 10 "freed" enough at tick 3, where the retry was refused.
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 1, segmentsPerWindow: 2);
        CounterState state = counter.CreateState(0);
        Assert.True(counter.TryAcquire(ref state, 0, 10, out Admission first, out _));
        Assert.False(counter.TryAcquire(ref state, 1, 1, out _, out _)); // rolls over: segment 0's 10 go to its slot
        Assert.True(counter.Refund(ref state, first));
        state.History![0] = EpochCount.Pack(0, 10); // the late recorder's write

        Assert.True(counter.TryAcquire(ref state, 1, 10, out _, out _)); // the cache says 0 in history
        Assert.False(counter.TryAcquire(ref state, 1, 1, out _, out long retryAfter));

        Assert.True(counter.TryAcquire(ref state, 1 + retryAfter, 1, out _, out long again), $"refused again at RETRY_AFTER {retryAfter}, told {again} more");
    }

    [Fact]
    public void Charge_PastTheLimit_RefusesUntilTheChargedSegmentExpires()
    {
        // Segments of 10 ticks, 3 per window: a permit taken in segment j is counted until segment j + 4 begins.
        var counter = new SlidingWindowCounter(permitLimit: 5, segmentTicks: 10, segmentsPerWindow: 3);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 1, 4, out _, out _));
        Admission charge = counter.Charge(ref state, 12, 9);

        Assert.Equal(new Admission(12, 9, 1, EpochCount.Pack(0, 4)), charge);
        Assert.Equal(13, counter.GetUsed(ref state, 15));
        Assert.Equal(0, counter.GetAvailablePermits(ref state, 15));
        Assert.False(counter.TryAcquire(ref state, 15, 1, out _, out long retryAfter));
        Assert.Equal(50 - 15, retryAfter); // segment 0's 4 permits leave 9 > 5 counted: the charge's segment must expire
        Assert.Equal(50 - 15, counter.GetRetryAfter(ref state, 15, 1));
        Assert.Equal(50 - 15, counter.GetResetAfter(ref state, 15));

        Assert.Equal(9, counter.GetUsed(ref state, 40));
        Assert.False(counter.TryAcquire(ref state, 49, 1, out _, out _));
        Assert.True(counter.TryAcquire(ref state, 50, 5, out _, out _));
    }

    [Fact]
    public void TryAcquire_HistoryAboveTheCountField_SumsInLongAndWaitsForEveryChargedSegment()
    {
        // Three saturated segments sum to 3 * (2^31 - 1), more than the cached sum's field holds.
        var counter = new SlidingWindowCounter(permitLimit: int.MaxValue, segmentTicks: 10, segmentsPerWindow: 3);
        CounterState state = counter.CreateState();
        for (int segment = 0; segment < 3; segment++)
        {
            Assert.Equal(EpochCount.MaxCount, counter.Charge(ref state, segment * 10, long.MaxValue).Permits);
        }

        Assert.Equal(3 * EpochCount.MaxCount, counter.GetUsed(ref state, 35));
        Assert.False(counter.TryAcquire(ref state, 35, 1, out _, out long retryAfter));
        Assert.Equal(3 * EpochCount.MaxCount, counter.GetUsed(ref state, 35));
        Assert.Equal(60 - 35, retryAfter); // segments 1 and 2 must both expire: 2^31 - 1 of them still exceeds the limit
        Assert.False(counter.TryAcquire(ref state, 45, 1, out _, out retryAfter));
        Assert.Equal(60 - 45, retryAfter);
        Assert.Equal(2 * EpochCount.MaxCount, counter.GetUsed(ref state, 45));
        Assert.Equal(60 - 45, counter.GetResetAfter(ref state, 45));
        Assert.False(counter.TryAcquire(ref state, 59, 1, out _, out _));
        Assert.True(counter.TryAcquire(ref state, 60, int.MaxValue, out _, out _));
    }

    [Fact]
    public void Charge_BeyondTheCountField_SaturatesAndReportsWhatItCounted()
    {
        var counter = new SlidingWindowCounter(permitLimit: 100, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 0, 100, out _, out _));
        Admission charge = counter.Charge(ref state, 1, long.MaxValue - 3);

        Assert.Equal(EpochCount.MaxCount - 100, charge.Permits);
        Assert.Equal(0, counter.Charge(ref state, 2, 1).Permits);
        Assert.Equal(EpochCount.MaxCount, counter.GetUsed(ref state, 2));
        Assert.Equal(0, EpochCount.StoredEpoch(state.Current));
    }

    [Fact]
    public void Refund_PartialWhileTheSegmentIsCurrent_SubtractsExactly()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 1, 3, out _, out _));
        Assert.True(counter.TryAcquire(ref state, 11, 7, out Admission admission, out _));

        Assert.True(counter.Refund(ref state, admission, 4));
        Assert.Equal(6, counter.GetUsed(ref state, 12));
        Assert.True(counter.Refund(ref state, admission, 3));
        Assert.Equal(3, counter.GetUsed(ref state, 12));
        Assert.False(counter.Refund(ref state, admission, 1)); // all 7 are back: the segment's count is 0
        Assert.Equal(3, counter.GetUsed(ref state, 12));
        Assert.True(counter.TryAcquire(ref state, 13, 7, out _, out _));
    }

    [Fact]
    public void Refund_PartialOfAChargeAfterRollover_SubtractsFromHistoryWhileTheWindowCountsIt()
    {
        var counter = new SlidingWindowCounter(permitLimit: 3, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Admission charge = counter.Charge(ref state, 5, 8);
        Assert.True(counter.Refund(ref state, charge, 2));
        Assert.False(counter.TryAcquire(ref state, 15, 1, out _, out _)); // rolls over to segment 1

        Assert.True(counter.Refund(ref state, charge, 2));
        Assert.Equal(4, counter.GetUsed(ref state, 15));
        Assert.Equal(30 - 15, counter.GetResetAfter(ref state, 15));
        Assert.True(counter.Refund(ref state, charge, 4));
        Assert.Equal(0, counter.GetUsed(ref state, 15));
        Assert.False(counter.Refund(ref state, charge, 1)); // all 8 are back
        Assert.True(counter.TryAcquire(ref state, 16, 3, out _, out _));
    }

    [Fact]
    public void Refund_AfterRollover_TheCachedHistorySumCountsItAtOnce()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 1, 8, out Admission first, out _));
        Assert.True(counter.TryAcquire(ref state, 11, 1, out _, out _)); // rollover: segment 0's 8 cached as segment 1's history

        Assert.True(counter.Refund(ref state, first, 5));

        Assert.True(counter.TryAcquire(ref state, 12, 6, out _, out _)); // 3 + 1 + 6: room only if the cache was summed again
        Assert.False(counter.TryAcquire(ref state, 13, 1, out _, out _));
    }

    [Fact]
    public void Refund_RacingTheRolloversPublishOfTheHistorySum_StillCountsInThatWindow()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 1, 8, out Admission first, out _));
        long beforeRollover = state.HistorySum;
        Assert.True(counter.TryAcquire(ref state, 11, 1, out _, out _));
        long published = state.HistorySum; // (segment 1, 8)

        state.HistorySum = beforeRollover; // the roller has moved the word on but not yet published its sum
        Assert.True(counter.Refund(ref state, first, 5));
        if (!EpochCount.Holds(state.HistorySum, 1))
        {
            state.HistorySum = published; // its publish lands after the refund: a no-op if the refund cached segment 1 itself
        }

        Assert.Equal(4, counter.GetUsed(ref state, 12));
        Assert.True(counter.TryAcquire(ref state, 12, 6, out _, out _)); // 3 + 1 + 6
        Assert.False(counter.TryAcquire(ref state, 13, 1, out _, out _));
    }

    [Fact]
    public void Refund_OnceTheSegmentHasLeftTheWindow_FreesNothing()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 1, 4, out Admission first, out _));
        Assert.True(counter.TryAcquire(ref state, 21, 1, out _, out _)); // segment 2: segment 0 still counts
        Assert.True(counter.TryAcquire(ref state, 31, 1, out _, out _)); // segment 3: it no longer does

        Assert.False(counter.Refund(ref state, first, 4));
        Assert.Equal(2, counter.GetUsed(ref state, 31));
    }

    [Fact]
    public void GetUsed_HistoryAndCurrentSegment_CountsWhatTheDecisionCounts()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.Equal(0, counter.GetUsed(ref state, 0));
        Assert.True(counter.TryAcquire(ref state, 1, 2, out _, out _));
        Assert.True(counter.TryAcquire(ref state, 11, 3, out _, out _));
        Assert.True(counter.TryAcquire(ref state, 21, 4, out _, out _));

        Assert.Equal(9, counter.GetUsed(ref state, 25));
        Assert.Equal(10 - 9, counter.GetAvailablePermits(ref state, 25));
        Assert.Equal(7, counter.GetUsed(ref state, 30)); // segment 0 expired; segment 2 not yet moved to history
        Assert.Equal(4, counter.GetUsed(ref state, 40));
        Assert.Equal(0, counter.GetUsed(ref state, 50));
    }

    [Fact]
    public void GetResetAfter_NewestCountedSegment_IsItsExpiry()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.Equal(0, counter.GetResetAfter(ref state, 5));
        Assert.True(counter.TryAcquire(ref state, 1, 2, out _, out _));
        Assert.True(counter.TryAcquire(ref state, 11, 3, out Admission second, out _));

        Assert.Equal(40 - 12, counter.GetResetAfter(ref state, 12));
        Assert.True(counter.Refund(ref state, second));
        Assert.Equal(30 - 12, counter.GetResetAfter(ref state, 12)); // only segment 0 counts now

        Assert.True(counter.TryAcquire(ref state, 25, 1, out _, out _));
        Assert.Equal(50 - 33, counter.GetResetAfter(ref state, 33)); // segment 2 is the word's, finished, not yet history
        Assert.True(counter.TryAcquire(ref state, 36, 1, out Admission fourth, out _));
        Assert.True(counter.Refund(ref state, fourth));
        Assert.Equal(50 - 37, counter.GetResetAfter(ref state, 37)); // segment 2 from history
        Assert.Equal(0, counter.GetResetAfter(ref state, 50));
    }

    [Fact]
    public void TryAcquire_LongPermitsUpToIntMaxValue_AdmitsTheWholeLimit()
    {
        var counter = new SlidingWindowCounter(permitLimit: int.MaxValue, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 0, (long)int.MaxValue, out Admission admission, out _));
        Assert.Equal(int.MaxValue, admission.Permits);
        Assert.False(counter.TryAcquire(ref state, 15, 1L, out _, out long retryAfter));
        Assert.Equal(30 - 15, retryAfter);
        Assert.True(counter.TryAcquire(ref state, 30, (long)int.MaxValue, out _, out _));
    }

    [Fact]
    public void TryAcquire_WithinOneSegment_MakesNoHistory()
    {
        // A key touched in one segment only (a flood of new keys) keeps its state to the word and the cached sum.
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 1, 3, out _, out _));
        Assert.True(counter.TryAcquire(ref state, 9, 7, out _, out _));
        Assert.False(counter.TryAcquire(ref state, 9, 1, out _, out long retryAfter));

        Assert.Equal(30 - 9, retryAfter);
        Assert.Equal(10, counter.GetUsed(ref state, 25)); // the finished word still counts, before any rollover
        Assert.Equal(30 - 25, counter.GetResetAfter(ref state, 25));
        Assert.Null(state.History);
    }

    [Fact]
    public void TryAcquire_AfterACountedSegmentEnds_RecordsItInHistoryMadeOnce()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 5, 1, out Admission refunded, out _));
        Assert.True(counter.Refund(ref state, refunded));
        Assert.True(counter.TryAcquire(ref state, 15, 4, out _, out _));
        Assert.Null(state.History); // segment 0 ended with nothing counted

        Assert.True(counter.TryAcquire(ref state, 25, 6, out _, out _));
        long[]? history = state.History;
        Assert.NotNull(history);
        Assert.Equal(3, history.Length);
        Assert.False(counter.TryAcquire(ref state, 29, 1, out _, out long retryAfter));
        Assert.Equal(40 - 29, retryAfter); // segment 1's 4 permits, now in history, free one at segment 4
        Assert.True(counter.TryAcquire(ref state, 40, 1, out _, out _));
        Assert.Same(history, state.History);
        Assert.Equal(7, counter.GetUsed(ref state, 41));
        Assert.Equal(70 - 41, counter.GetResetAfter(ref state, 41));
        Assert.Null(counter.GetFullSince(ref state, 41));
        Assert.Equal(70, counter.GetFullSince(ref state, 70)); // segment 4's permit, the newest, came back at 70
    }

    [Fact]
    public void Charge_RollingOverACountedSegment_RecordsItInHistory()
    {
        var counter = new SlidingWindowCounter(permitLimit: 10, segmentTicks: 10, segmentsPerWindow: 2);
        CounterState state = counter.CreateState();
        Assert.True(counter.TryAcquire(ref state, 5, 6, out _, out _));
        counter.Charge(ref state, 12, 7);

        Assert.NotNull(state.History);
        Assert.Equal(13, counter.GetUsed(ref state, 12));
        Assert.False(counter.TryAcquire(ref state, 25, 1, out _, out long retryAfter));
        Assert.Equal(30 - 25, retryAfter); // 13 counted: segment 0's 6 free enough when segment 3 begins
        Assert.False(counter.TryAcquire(ref state, 30, 4, out _, out _)); // segment 1's charged 7 still count
        Assert.True(counter.TryAcquire(ref state, 30, 3, out _, out _));
    }
}
