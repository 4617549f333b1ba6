using FsCheck.Xunit;
using RateEngine.Algorithms;
using RateEngine.Timing;

namespace RateEngine.Tests.Algorithms;

public class EpochCountTests
{
    [Theory]
    [InlineData(5, 5, 0)]
    [InlineData(6, 5, 1)]
    [InlineData(5, 6, -1)]
    [InlineData(0, 1L << 20, -(1L << 20))]
    public void Distance_NearbyEpochs_IsTheSignedDifference(long now, long stored, long expected) =>
        Assert.Equal(expected, EpochCount.Distance(now, EpochCount.Pack(stored, 3)));

    [Fact]
    public void Distance_IdleForMoreThanHalfTheEpochRange_ReadsAsBehindNotAhead()
    {
        // 2^32 + 7 epochs of idleness used to read as "7 - 2^32 epochs ahead": the key kept its old count for months.
        long stored = 100;
        long now = stored + (1L << 32) + 7;
        Assert.True(EpochCount.Distance(now, EpochCount.Pack(stored, 3)) > 0);
    }

    [Fact]
    public void Distance_WrapsPast33Bits_StillComparesNearbyEpochs()
    {
        long stored = (1L << 33) - 2;
        Assert.Equal(3, EpochCount.Distance(stored + 3, EpochCount.Pack(stored, 1)));
        Assert.True(EpochCount.Holds(EpochCount.Pack(stored + (1L << 33), 1), stored));
    }

    /// <summary>
    /// The division-free shortcut must give <c>now / period</c> for any word: the word's own period (the shortcut), one
    /// far behind or ahead, one wrapped past 33 bits, and periods so long that the word's start overflows a long.
    /// </summary>
    [Property(MaxTest = 2_000)]
    public void PeriodOf_AnyWordAndTime_IsTheQuotient(ulong nowSeed, ulong periodSeed, byte periodScale, ulong storedSeed, bool nearby)
    {
        // FsCheck's integers are small: spread them over the whole range (a multiplicative hash).
        const ulong Spread = 0x9E3779B97F4A7C15;
        ulong periodBound = (periodScale % 4) switch { 0 => 10UL, 1 => 1_000_000UL, 2 => 1UL << 40, _ => (ulong)TimeMath.MaxTicks };
        long now = (long)((nowSeed * Spread) % (ulong)TimeMath.MaxTicks);
        long period = (long)((periodSeed * Spread) % periodBound) + 1;
        long stored = nearby ? (now / period) + (long)(storedSeed % 3) - 1 : (long)(storedSeed * Spread);
        long word = EpochCount.Pack(stored, 5);

        Assert.Equal(now / period, EpochCount.PeriodOf(now, word, period, (long.MaxValue / period) - 1));
    }

    [Fact]
    public void PeriodOf_WordWhoseStartOverflows_IsNotTakenForNow()
    {
        // 2^24 periods of 2^40 ticks start at 2^64, which wraps to 0: without the bound, a time in period 0 read as 2^24.
        const long Period = 1L << 40;
        Assert.Equal(0, EpochCount.PeriodOf(5, EpochCount.Pack(1L << 24, 1), Period, (long.MaxValue / Period) - 1));
    }
}
