using RateEngine.Algorithms;

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
}
