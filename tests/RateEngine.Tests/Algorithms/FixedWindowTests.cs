using RateEngine.Algorithms;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Algorithms;

public class FixedWindowTests
{
    [Fact]
    public void TryAcquire_FullKeyIdleForTwoToThe32Windows_AdmitsAgain()
    {
        var window = new FixedWindow(permitLimit: 2, windowTicks: 1_000);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 0, 2, out _, out _));
        Assert.False(window.TryAcquire(ref state, 1, 1, out _, out _));

        long muchLater = ((1L << 32) + 5) * 1_000;
        Assert.True(window.TryAcquire(ref state, muchLater, 2, out Admission admission, out _));
        Assert.Equal(muchLater, admission.Stamp);
    }

    [Fact]
    public void CreateState_ForAKeyMadeJustBeforeTheEpochsWrap_CountsFromNowsWindow()
    {
        StateMadeBeforeTheWrap.CountsFromNowsPeriod<FixedWindow, long>(new FixedWindow(permitLimit: 1, windowTicks: 10));
    }

    [Theory]
    [InlineData(1L << 21)]
    [InlineData((1L << 32) + 5)] // wraps to a later window, not a far one: read as new, it admitted a second limit
    public void TryAcquire_ClockReadOlderThanTheWordByMoreThanMaxLag_DecidesInTheWordsWindow(long stalledWindows)
    {
        StalledClockRead.IsDecidedInTheWordsPeriod<FixedWindow, long>(clock => new FixedWindow(permitLimit: 2, windowTicks: 10, clock), stalledWindows);
    }

    [Fact]
    public void Refund_NobodyAdmittedSince_RestoresThePreviousWindowExactly()
    {
        var window = new FixedWindow(permitLimit: 3, windowTicks: 10);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 5, 2, out _, out _));
        long before = state;
        Assert.True(window.TryAcquire(ref state, 25, 1, out Admission admission, out _));
        Assert.True(window.Refund(ref state, admission));
        Assert.Equal(before, state);
    }

    [Fact]
    public void Refund_WindowAlreadyOver_FreesNothing()
    {
        var window = new FixedWindow(permitLimit: 1, windowTicks: 10);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 5, 1, out Admission admission, out _));
        Assert.True(window.TryAcquire(ref state, 15, 1, out _, out _));
        Assert.False(window.Refund(ref state, admission));
        Assert.False(window.TryAcquire(ref state, 16, 1, out _, out _));
    }

    [Fact]
    public void Charge_PastTheLimit_CountsAllAndRefusesUntilTheWindowEnds()
    {
        var window = new FixedWindow(permitLimit: 5, windowTicks: 100);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 10, 3, out _, out _));
        Admission charge = window.Charge(ref state, 20, 7);

        Assert.Equal(new Admission(20, 7, 0, EpochCount.Pack(0, 3)), charge);
        Assert.Equal(10, window.GetUsed(ref state, 30));
        Assert.Equal(0, window.GetAvailablePermits(ref state, 30));
        Assert.Equal(70, window.GetRetryAfter(ref state, 30, 1));
        Assert.False(window.TryAcquire(ref state, 30, 1, out _, out long retryAfter));
        Assert.Equal(70, retryAfter);
        Assert.Null(window.GetFullSince(ref state, 30));

        Assert.True(window.TryAcquire(ref state, 100, 5, out _, out _));
        Assert.Equal(5, window.GetUsed(ref state, 100));
    }

    [Fact]
    public void Charge_BeyondTheCountField_SaturatesAndReportsWhatItCounted()
    {
        var window = new FixedWindow(permitLimit: int.MaxValue, windowTicks: 100);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 0, 10, out _, out _));
        Admission charge = window.Charge(ref state, 1, long.MaxValue);

        Assert.Equal(EpochCount.MaxCount - 10, charge.Permits);
        Assert.Equal(EpochCount.MaxCount, window.GetUsed(ref state, 2));
        Assert.Equal(0, window.Charge(ref state, 2, 5).Permits);
        Assert.Equal(EpochCount.MaxCount, window.GetUsed(ref state, 2));
        Assert.Equal(0, EpochCount.StoredEpoch(state)); // the count did not spill into the epoch
        Assert.False(window.TryAcquire(ref state, 3, 1, out _, out _));
        Assert.True(window.Refund(ref state, charge, 5));
        Assert.Equal(EpochCount.MaxCount - 5, window.GetUsed(ref state, 3));
    }

    [Fact]
    public void Charge_WordInAnEarlierWindow_CountsInTheCurrentOne()
    {
        var window = new FixedWindow(permitLimit: 2, windowTicks: 10);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 5, 2, out _, out _));
        Admission charge = window.Charge(ref state, 27, 4);

        Assert.Equal(2, charge.Marker);
        Assert.Equal(4, window.GetUsed(ref state, 27));
        Assert.Equal(3, window.GetResetAfter(ref state, 27));
        Assert.Equal(0, window.GetUsed(ref state, 30));
        Assert.True(window.TryAcquire(ref state, 30, 2, out _, out _));
    }

    [Fact]
    public void Refund_PartialWhileTheWindowIsCurrent_SubtractsExactly()
    {
        var window = new FixedWindow(permitLimit: 10, windowTicks: 100);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 0, 2, out _, out _));
        Assert.True(window.TryAcquire(ref state, 5, 8, out Admission admission, out _));

        Assert.True(window.Refund(ref state, admission, 3));
        Assert.Equal(7, window.GetUsed(ref state, 6));
        Assert.True(window.Refund(ref state, admission, 5));
        Assert.Equal(2, window.GetUsed(ref state, 6));
        Assert.True(window.TryAcquire(ref state, 7, 8, out _, out _));
    }

    [Fact]
    public void Refund_PartialAfterTheWindowIsOver_FreesNothing()
    {
        var window = new FixedWindow(permitLimit: 4, windowTicks: 10);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 5, 4, out Admission admission, out _));
        Assert.True(window.TryAcquire(ref state, 15, 4, out _, out _));

        Assert.False(window.Refund(ref state, admission, 2));
        Assert.Equal(4, window.GetUsed(ref state, 15));
    }

    [Fact]
    public void Refund_PartialMoreThanTheWindowStillCounts_FreesNothingAndNeverGoesNegative()
    {
        var window = new FixedWindow(permitLimit: 4, windowTicks: 10);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 1, 4, out Admission admission, out _));
        Assert.True(window.Refund(ref state, admission, 3));

        // A caller that lost track asks for 3 more of the 4: only 1 is counted, so nothing is freed.
        Assert.False(window.Refund(ref state, admission, 3));
        Assert.Equal(1, window.GetUsed(ref state, 2));
        Assert.Equal(3, window.GetAvailablePermits(ref state, 2));
    }

    [Fact]
    public void GetUsed_WordWindowOver_IsZero()
    {
        var window = new FixedWindow(permitLimit: 4, windowTicks: 10);
        long state = window.CreateState();
        Assert.Equal(0, window.GetUsed(ref state, 3));
        Assert.True(window.TryAcquire(ref state, 3, 3, out _, out _));
        Assert.Equal(3, window.GetUsed(ref state, 9));
        Assert.Equal(0, window.GetUsed(ref state, 10));
    }

    [Fact]
    public void GetResetAfter_CountedOrNot_IsTheWindowEndOrZero()
    {
        var window = new FixedWindow(permitLimit: 4, windowTicks: 10);
        long state = window.CreateState();
        Assert.Equal(0, window.GetResetAfter(ref state, 3));
        Assert.True(window.TryAcquire(ref state, 3, 1, out Admission admission, out _));
        Assert.Equal(7, window.GetResetAfter(ref state, 3));
        Assert.Equal(1, window.GetResetAfter(ref state, 9));
        Assert.Equal(0, window.GetResetAfter(ref state, 10));
        Assert.True(window.Refund(ref state, admission));
        Assert.Equal(0, window.GetResetAfter(ref state, 4));
    }

    [Fact]
    public void TryAcquire_LongPermitsUpToIntMaxValue_AdmitsTheWholeLimit()
    {
        var window = new FixedWindow(permitLimit: int.MaxValue, windowTicks: 10);
        long state = window.CreateState();
        Assert.True(window.TryAcquire(ref state, 0, (long)int.MaxValue, out Admission admission, out _));
        Assert.Equal(int.MaxValue, admission.Permits);
        Assert.False(window.TryAcquire(ref state, 1, 1L, out _, out long retryAfter));
        Assert.Equal(9, retryAfter);
        Assert.Equal(int.MaxValue, window.GetUsed(ref state, 1));
        Assert.True(window.TryAcquire(ref state, 10, (long)int.MaxValue, out _, out _));
    }
}
