namespace RateEngine.Tests.Budgets;

/// <summary><see cref="PriceTable"/>: exact costs, rounded up to a micro-dollar, and bad prices refused at construction.</summary>
public class PriceTableTests
{
    private static readonly PriceTable Prices = new([new ModelPrice("small", 0.15m, 0.60m), new ModelPrice("large", 2.50m, 10m)]);

    [Theory]
    [InlineData("large", 1, 0, 3)] // 2.5 micro-dollars: rounded up, never billed less than the provider bills
    [InlineData("large", 2, 0, 5)]
    [InlineData("small", 1_000_000, 1_000_000, 750_000)] // $0.15 + $0.60
    [InlineData("small", 0, 0, 0)]
    [InlineData("small", 7, 1, 2)] // 1.05 + 0.60 = 1.65
    public void MicroDollars_IsExactAndRoundedUp(string model, long input, long output, long expected)
    {
        Assert.Equal(expected, Prices.MicroDollars(model, input, output));
    }

    [Fact]
    public void MicroDollars_BadArguments_Throw()
    {
        Assert.Throws<KeyNotFoundException>(() => Prices.MicroDollars("medium", 1, 1));
        Assert.Throws<ArgumentNullException>(() => Prices.MicroDollars(null!, 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Prices.MicroDollars("small", -1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Prices.MicroDollars("small", 1, -1));
        Assert.Throws<OverflowException>(() => new PriceTable([new ModelPrice("dear", 1_000_000m, 0)]).MicroDollars("dear", long.MaxValue, 0));
    }

    [Fact]
    public void Ctor_BadPrices_AreRefused()
    {
        Assert.Throws<ArgumentException>(() => new PriceTable([new ModelPrice("a", 1, 1), new ModelPrice("a", 2, 2)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PriceTable([new ModelPrice("a", -1, 1)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PriceTable([new ModelPrice("a", 1, -0.01m)]));
        Assert.Throws<ArgumentNullException>(() => new PriceTable(null!));
        Assert.Equal("prices", Assert.Throws<ArgumentNullException>(() => new PriceTable([null!])).ParamName);
        Assert.Equal("model", Assert.Throws<ArgumentNullException>(() => Prices.TryGetPrice(null!, out _)).ParamName);
    }

    [Fact]
    public void ModelsAndTryGetPrice_ListWhatIsPriced()
    {
        Assert.Equal(["large", "small"], Prices.Models.Order());
        Assert.True(Prices.TryGetPrice("large", out ModelPrice? large));
        Assert.Equal(10m, large!.OutputPerMillion);
        Assert.False(Prices.TryGetPrice("medium", out ModelPrice? none));
        Assert.Null(none);
    }
}
