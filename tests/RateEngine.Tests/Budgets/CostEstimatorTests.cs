using FsCheck;
using FsCheck.Xunit;
using RateEngine.Tests.Support;

namespace RateEngine.Tests.Budgets;

/// <summary>
/// <see cref="CostEstimator{TSelector}"/>: the maximum during warm-up, the nearest-rank quantile of the last N actuals
/// (at most k − 1 observations stale, k = max(1, N / 64)) after it, always within [1, maximum], bounded selectors,
/// thread safety and argument checks.
/// </summary>
public class CostEstimatorTests
{
    private const long MaxTokens = 4096;

    /// <summary>Lognormal output lengths with median 300 and 95th percentile 1,500 (σ = ln 5 / 1.645), as a chat model's.</summary>
    private static long Lognormal(Random random, double median = 300, double p95 = 1500)
    {
        double sigma = Math.Log(p95 / median) / 1.6448536269514722;
        double u1 = 1.0 - random.NextDouble();
        double u2 = random.NextDouble();
        double normal = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
        return (long)Math.Round(median * Math.Exp(sigma * normal));
    }

    /// <summary>The test's own nearest-rank quantile: the ⌈q·n⌉-th smallest value.</summary>
    private static long NearestRank(IEnumerable<long> values, double quantile)
    {
        long[] sorted = [.. values.Order()];
        int rank = (int)Math.Ceiling((quantile * sorted.Length) - 1e-9);
        return sorted[Math.Clamp(rank, 1, sorted.Length) - 1];
    }

    [Fact]
    public void Estimate_BeforeMinimumSamples_ReturnsTheMaximum()
    {
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { MinimumSamples = 20 });
        for (int i = 0; i < 19; i++)
        {
            estimator.Observe("gpt", 100);
            Assert.Equal(MaxTokens, estimator.Estimate("gpt", MaxTokens));
        }

        estimator.Observe("gpt", 100);
        Assert.Equal(100, estimator.Estimate("gpt", MaxTokens));
    }

    [Fact]
    public void Estimate_UnknownSelector_ReturnsTheMaximumAndAddsNothing()
    {
        var estimator = new CostEstimator<string>();
        Assert.Equal(MaxTokens, estimator.Estimate("never-seen", MaxTokens));
        Assert.Equal(0, estimator.SelectorCount);
    }

    [Fact]
    public void Estimate_LognormalActuals_IsTheWindowQuantileAtMostKMinusOneObservationsStale()
    {
        // N = 256, so k = 4: after every observation past warm-up the estimate is the exact nearest-rank 95th
        // percentile of the window as it stood after one of the last 4 observations.
        const int N = 256;
        const int K = N / 64;
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { SampleCount = N, MinimumSamples = 20 });
        var random = new Random(12345);
        var window = new Queue<long>();
        var recent = new Queue<long>();
        for (int i = 0; i < 5_000; i++)
        {
            long actual = Math.Min(Lognormal(random), MaxTokens);
            estimator.Observe("gpt", actual);
            window.Enqueue(actual);
            if (window.Count > N)
            {
                window.Dequeue();
            }

            if (window.Count < 20)
            {
                continue;
            }

            recent.Enqueue(Math.Max(1, NearestRank(window, 0.95)));
            if (recent.Count > K)
            {
                recent.Dequeue();
            }

            Assert.Contains(estimator.Estimate("gpt", MaxTokens), recent);
        }
    }

    [Fact]
    public void Estimate_LognormalActuals_ConvergesToTheTrueQuantileWithinTheSamplingError()
    {
        // The true 95th percentile is 1,500. Of fresh requests, 5 % ± 2.7 % (two standard deviations for N = 256)
        // should exceed the estimate; the test allows 1.5 % to 9 % over several independent windows.
        var random = new Random(2024);
        for (int trial = 0; trial < 5; trial++)
        {
            var estimator = new CostEstimator<string>();
            for (int i = 0; i < 1_000; i++)
            {
                estimator.Observe("gpt", Math.Min(Lognormal(random), MaxTokens));
            }

            long estimate = estimator.Estimate("gpt", MaxTokens);
            int above = 0;
            const int Fresh = 50_000;
            for (int i = 0; i < Fresh; i++)
            {
                above += Math.Min(Lognormal(random), MaxTokens) > estimate ? 1 : 0;
            }

            double fraction = (double)above / Fresh;
            Assert.InRange(fraction, 0.015, 0.09);
            Assert.InRange(estimate, 1_000, 2_200);
        }
    }

    [Fact]
    public void Estimate_LargeWindowStillFilling_FollowsTheActualsHeldNotTheFirstEstimate()
    {
        // With a window of 65,536 the estimate was recomputed every 1,024 observations from the first one on, so the one
        // made from the first 20 actuals (all 1) stood for the next 1,023, whatever they were.
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { SampleCount = 65_536, MinimumSamples = 20 });
        for (int i = 0; i < 20; i++)
        {
            estimator.Observe("model", 1);
        }

        for (int i = 0; i < 1_000; i++)
        {
            estimator.Observe("model", 1_000);
        }

        // 20 actuals of 1 and 1,000 of 1,000: the 0.95 quantile is 1,000, at most 1,020 / 64 - 1 observations stale.
        Assert.Equal(1_000, estimator.Estimate("model", 4_096));
    }

    [Fact]
    public void Estimate_AllZeroActuals_IsOne()
    {
        var estimator = new CostEstimator<string>();
        for (int i = 0; i < 100; i++)
        {
            estimator.Observe("gpt", 0);
        }

        Assert.Equal(1, estimator.Estimate("gpt", MaxTokens));
    }

    [Fact]
    public void Estimate_ActualsAboveTheMaximum_IsTheMaximum()
    {
        var estimator = new CostEstimator<string>();
        for (int i = 0; i < 100; i++)
        {
            estimator.Observe("gpt", long.MaxValue);
        }

        Assert.Equal(MaxTokens, estimator.Estimate("gpt", MaxTokens));
        Assert.Equal(1, estimator.Estimate("gpt", 1));
        Assert.Equal(long.MaxValue, estimator.Estimate("gpt", long.MaxValue));
    }

    [Fact]
    public void Estimate_Headroom_ScalesTheQuantileAndRoundsUp()
    {
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { Headroom = 1.5 });
        for (int i = 0; i < 100; i++)
        {
            estimator.Observe("gpt", 101);
        }

        Assert.Equal(152, estimator.Estimate("gpt", MaxTokens));
        Assert.Equal(120, estimator.Estimate("gpt", 120));
    }

    [Theory]
    [InlineData(300, 1500, 3000, 9000)]
    [InlineData(3000, 9000, 300, 1500)]
    public void Estimate_DistributionShifts_FollowsWithinSampleCountObservations(double fromMedian, double fromP95, double toMedian, double toP95)
    {
        const int N = 256;
        const long Maximum = 100_000;
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { SampleCount = N });
        var random = new Random(7);
        var observed = new List<long>();
        for (int i = 0; i < 2 * N; i++)
        {
            observed.Add(Lognormal(random, fromMedian, fromP95));
            estimator.Observe("gpt", observed[^1]);
        }

        long before = estimator.Estimate("gpt", Maximum);
        for (int i = 0; i < N; i++)
        {
            observed.Add(Lognormal(random, toMedian, toP95));
            estimator.Observe("gpt", observed[^1]);
        }

        // The quantile of the window as it was at most k - 1 = 3 observations ago (the last N actuals then).
        long after = estimator.Estimate("gpt", Maximum);
        long[] allowed = [.. Enumerable.Range(0, N / 64).Select(stale => NearestRank(observed[(observed.Count - stale - N)..(observed.Count - stale)], 0.95))];
        Assert.Contains(after, allowed);
        Assert.InRange(after, toP95 * 0.6, toP95 * 1.6);
        Assert.InRange(before, fromP95 * 0.6, fromP95 * 1.6);
    }

    [Fact]
    public void Estimate_SelectorsAreIndependent()
    {
        var estimator = new CostEstimator<string>();
        for (int i = 0; i < 50; i++)
        {
            estimator.Observe("small", 10);
            estimator.Observe("large", 2_000);
        }

        Assert.Equal(10, estimator.Estimate("small", MaxTokens));
        Assert.Equal(2_000, estimator.Estimate("large", MaxTokens));
    }

    [Fact]
    public void Observe_BeyondMaxSelectors_IgnoresNewSelectorsWhichGetTheMaximum()
    {
        var estimator = new CostEstimator<int>(new CostEstimatorOptions { MaxSelectors = 3, MinimumSamples = 1 });
        for (int selector = 0; selector < 10; selector++)
        {
            for (int i = 0; i < 5; i++)
            {
                estimator.Observe(selector, 50);
            }
        }

        Assert.Equal(3, estimator.SelectorCount);
        Assert.Equal(50, estimator.Estimate(2, MaxTokens));
        Assert.Equal(MaxTokens, estimator.Estimate(3, MaxTokens));
        Assert.Equal(MaxTokens, estimator.Estimate(9, MaxTokens));
    }

    [Fact]
    public void Ctor_Comparer_IsUsedForSelectors()
    {
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { MinimumSamples = 1 }, StringComparer.OrdinalIgnoreCase);
        estimator.Observe("GPT-5", 77);
        Assert.Equal(77, estimator.Estimate("gpt-5", MaxTokens));
    }

    [Fact]
    public void Estimate_SteadyState_DoesNotAllocate()
    {
        var estimator = new CostEstimator<string>();
        for (int i = 0; i < 100; i++)
        {
            estimator.Observe("gpt", i);
        }

        long sum = estimator.Estimate("gpt", MaxTokens) + estimator.Estimate("other", MaxTokens);
        long allocated = Allocation.LeastOnThisThread(() =>
        {
            for (int i = 0; i < 10_000; i++)
            {
                sum += estimator.Estimate("gpt", MaxTokens) + estimator.Estimate("other", MaxTokens);
            }
        });

        Assert.Equal(0, allocated);
        Assert.True(sum > 0);
    }

    [Fact]
    public async Task ObserveAndEstimate_ManyThreads_NoExceptionAndEveryEstimateWithinBounds()
    {
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { SampleCount = 64, MinimumSamples = 8 });
        string[] selectors = ["a", "b", "c"];
        int threads = Math.Max(4, Environment.ProcessorCount * 2);
        using var start = new Barrier(threads);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Task[] tasks = [.. Enumerable.Range(0, threads).Select(t => Task.Factory.StartNew(
            () =>
            {
                var random = new Random(t);
                start.SignalAndWait();
                for (int i = 0; i < 20_000; i++)
                {
                    string selector = selectors[random.Next(selectors.Length)];
                    long maximum = random.Next(1, 5_000);
                    if (random.Next(2) == 0)
                    {
                        // "c" always costs 123, so its estimate must settle on exactly that.
                        estimator.Observe(selector, selector == "c" ? 123 : random.Next(0, 10_000));
                    }

                    long estimate = estimator.Estimate(selector, maximum);
                    if (estimate < 1 || estimate > maximum)
                    {
                        failures.Enqueue($"{selector}: {estimate} outside [1, {maximum}]");
                    }
                }
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default))];
        await Task.WhenAll(tasks);

        Assert.Empty(failures);
        Assert.Equal(3, estimator.SelectorCount);
        Assert.Equal(123, estimator.Estimate("c", MaxTokens));
    }

    [Fact]
    public void Estimate_NullSelector_ThrowsArgumentNull()
    {
        var estimator = new CostEstimator<string>();
        Assert.Equal("selector", Assert.Throws<ArgumentNullException>(() => estimator.Estimate(null!, MaxTokens)).ParamName);
    }

    [Fact]
    public void Observe_NullSelector_ThrowsArgumentNull()
    {
        var estimator = new CostEstimator<string>();
        Assert.Equal("selector", Assert.Throws<ArgumentNullException>(() => estimator.Observe(null!, 1)).ParamName);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(long.MinValue)]
    public void Estimate_MaximumBelowOne_ThrowsArgumentOutOfRange(long maximum)
    {
        var estimator = new CostEstimator<string>();
        Assert.Equal("maximum", Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Estimate("gpt", maximum)).ParamName);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(long.MinValue)]
    public void Observe_NegativeActual_ThrowsArgumentOutOfRange(long actual)
    {
        var estimator = new CostEstimator<string>();
        Assert.Equal("actual", Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Observe("gpt", actual)).ParamName);
        Assert.Equal(0, estimator.SelectorCount);
    }

    [Fact]
    public void Ctor_NullOptions_ThrowsArgumentNull()
    {
        Assert.Equal("options", Assert.Throws<ArgumentNullException>(() => new CostEstimator<string>(null!)).ParamName);
    }

    public static TheoryData<string, CostEstimatorOptions> InvalidOptions => new()
    {
        { "Quantile", new CostEstimatorOptions { Quantile = 0 } },
        { "Quantile", new CostEstimatorOptions { Quantile = -0.5 } },
        { "Quantile", new CostEstimatorOptions { Quantile = 1.0001 } },
        { "Quantile", new CostEstimatorOptions { Quantile = double.NaN } },
        { "SampleCount", new CostEstimatorOptions { SampleCount = 0 } },
        { "SampleCount", new CostEstimatorOptions { SampleCount = CostEstimatorOptions.MaxSampleCount + 1 } },
        { "MinimumSamples", new CostEstimatorOptions { MinimumSamples = 0 } },
        { "MinimumSamples", new CostEstimatorOptions { SampleCount = 10, MinimumSamples = 11 } },
        { "Headroom", new CostEstimatorOptions { Headroom = 0.99 } },
        { "Headroom", new CostEstimatorOptions { Headroom = double.PositiveInfinity } },
        { "Headroom", new CostEstimatorOptions { Headroom = double.NaN } },
        { "MaxSelectors", new CostEstimatorOptions { MaxSelectors = 0 } },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public void Ctor_OptionOutOfRange_ThrowsArgumentOutOfRangeNamingIt(string option, CostEstimatorOptions options)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new CostEstimator<string>(options));
        Assert.Equal("options", error.ParamName);
        Assert.StartsWith(option, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Ctor_ExtremeValidOptions_AreAccepted()
    {
        var estimator = new CostEstimator<string>(new CostEstimatorOptions
        {
            Quantile = 1, SampleCount = 1, MinimumSamples = 1, Headroom = 1000, MaxSelectors = 1,
        });
        estimator.Observe("gpt", 5);
        estimator.Observe("gpt", 3);
        Assert.Equal(3_000, estimator.Estimate("gpt", MaxTokens));
    }

    [Fact]
    public void Options_Defaults_AreTheDocumentedOnes()
    {
        var options = new CostEstimatorOptions();
        Assert.Equal(0.95, options.Quantile);
        Assert.Equal(256, options.SampleCount);
        Assert.Equal(20, options.MinimumSamples);
        Assert.Equal(1.0, options.Headroom);
        Assert.Equal(1024, options.MaxSelectors);
    }

    [Property(MaxTest = 500)]
    public bool Estimate_AnyActualsAndMaximum_IsBetweenOneAndTheMaximum(NonNegativeInt[] actuals, PositiveInt maximum, byte minimumSamples)
    {
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { SampleCount = 32, MinimumSamples = 1 + (minimumSamples % 32) });
        foreach (NonNegativeInt actual in actuals)
        {
            estimator.Observe("gpt", actual.Get);
            long estimate = estimator.Estimate("gpt", maximum.Get);
            if (estimate < 1 || estimate > maximum.Get)
            {
                return false;
            }
        }

        return true;
    }

    [Property(MaxTest = 500)]
    public bool Estimate_AllActualsEqual_IsThatValueAfterWarmUp(PositiveInt value, PositiveInt slack, byte extra)
    {
        long c = value.Get;
        long maximum = c + slack.Get - 1; // c <= maximum
        var estimator = new CostEstimator<string>(new CostEstimatorOptions { MinimumSamples = 20 });
        for (int i = 0; i < 19; i++)
        {
            estimator.Observe("gpt", c);
            if (estimator.Estimate("gpt", maximum) != maximum)
            {
                return false;
            }
        }

        for (int i = 0; i <= extra; i++)
        {
            estimator.Observe("gpt", c);
            if (estimator.Estimate("gpt", maximum) != c)
            {
                return false;
            }
        }

        return true;
    }
}
