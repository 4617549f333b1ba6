using System.Threading.RateLimiting;

namespace RateEngine.Tests.Parity;

/// <summary>The drop-ins accept exactly the options the in-box limiters accept, and reject the rest the same way.</summary>
public class OptionsValidationParityTests
{
    private static readonly int[] Counts = [int.MinValue, -1, 0, 1, 7, int.MaxValue];
    private static readonly TimeSpan[] Spans = [TimeSpan.MinValue, TimeSpan.FromTicks(-1), TimeSpan.Zero, TimeSpan.FromTicks(1), TimeSpan.FromSeconds(1)];

    public static TheoryData<bool> AutoReplenishment => new() { true, false };

    [Theory]
    [MemberData(nameof(AutoReplenishment))]
    public void Constructor_FixedWindowOptionsGrid_AcceptsAndRejectsLikeInBox(bool autoReplenishment)
    {
        foreach (int permitLimit in Counts)
        {
            foreach (int queueLimit in Counts)
            {
                foreach (TimeSpan window in Spans)
                {
                    var options = new FixedWindowRateLimiterOptions
                    {
                        PermitLimit = permitLimit,
                        QueueLimit = queueLimit,
                        Window = window,
                        AutoReplenishment = autoReplenishment,
                    };
                    AssertSameOutcome(() => new FixedWindowRateLimiter(options), () => new LockFreeFixedWindowRateLimiter(options), options);
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(AutoReplenishment))]
    public void Constructor_TokenBucketOptionsGrid_AcceptsAndRejectsLikeInBox(bool autoReplenishment)
    {
        foreach (int tokenLimit in Counts)
        {
            foreach (int tokensPerPeriod in Counts)
            {
                foreach (int queueLimit in new[] { -1, 0, 5 })
                {
                    foreach (TimeSpan period in Spans)
                    {
                        var options = new TokenBucketRateLimiterOptions
                        {
                            TokenLimit = tokenLimit,
                            TokensPerPeriod = tokensPerPeriod,
                            QueueLimit = queueLimit,
                            ReplenishmentPeriod = period,
                            AutoReplenishment = autoReplenishment,
                        };
                        AssertSameOutcome(() => new TokenBucketRateLimiter(options), () => new LockFreeTokenBucketRateLimiter(options), options);
                    }
                }
            }
        }
    }

    [Fact]
    public void Constructor_NullOptionsOrTimeProvider_ThrowsArgumentNullException()
    {
        Assert.Equal("options", Assert.Throws<ArgumentNullException>(() => new LockFreeFixedWindowRateLimiter(null!)).ParamName);
        Assert.Equal("options", Assert.Throws<ArgumentNullException>(() => new LockFreeTokenBucketRateLimiter(null!)).ParamName);
        var fixedOptions = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromSeconds(1) };
        var bucketOptions = new TokenBucketRateLimiterOptions { TokenLimit = 1, TokensPerPeriod = 1, ReplenishmentPeriod = TimeSpan.FromSeconds(1) };
        Assert.Equal("timeProvider", Assert.Throws<ArgumentNullException>(() => new LockFreeFixedWindowRateLimiter(fixedOptions, null!)).ParamName);
        Assert.Equal("timeProvider", Assert.Throws<ArgumentNullException>(() => new LockFreeTokenBucketRateLimiter(bucketOptions, null!)).ParamName);
    }

    [Fact]
    public void Constructor_OptionsChangedAfterwards_LimiterKeepsItsCopy()
    {
        var options = new FixedWindowRateLimiterOptions { PermitLimit = 1, Window = TimeSpan.FromHours(1) };
        using var limiter = new LockFreeFixedWindowRateLimiter(options);
        options.PermitLimit = 100;
        Assert.True(limiter.AttemptAcquire().IsAcquired);
        Assert.False(limiter.AttemptAcquire().IsAcquired);
    }

    private static void AssertSameOutcome(Func<RateLimiter> inBox, Func<RateLimiter> ours, object options)
    {
        Exception? expected = Record(inBox);
        Exception? actual = Record(ours);

        // The in-box limiter's Timer rejects periods over ~49.7 days; ours has no such timer and accepts them.
        if (expected is ArgumentOutOfRangeException { ParamName: "dueTime" })
        {
            Assert.Null(actual);
            return;
        }

        Assert.True(expected?.GetType() == actual?.GetType(), $"{Describe(options)}: in-box {expected?.GetType().Name ?? "accepted"}, ours {actual?.GetType().Name ?? "accepted"}");
        Assert.Equal((expected as ArgumentException)?.ParamName, (actual as ArgumentException)?.ParamName);
        Assert.Equal(expected?.Message, actual?.Message);
    }

    private static Exception? Record(Func<RateLimiter> create)
    {
        try
        {
            create().Dispose();
            return null;
        }
        catch (Exception exception) when (exception is ArgumentException)
        {
            return exception;
        }
    }

    private static string Describe(object options) =>
        string.Join(", ", options.GetType().GetProperties().Select(p => $"{p.Name}={p.GetValue(options)}"));
}
