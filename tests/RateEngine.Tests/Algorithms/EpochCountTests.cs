using RateEngine.Algorithms;

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
}
