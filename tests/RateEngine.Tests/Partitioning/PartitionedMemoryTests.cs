using System.Diagnostics;
using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;
using RateEngine.Partitioning;
using RateEngine.Tests.Support;
using Xunit.Abstractions;

namespace RateEngine.Tests.Partitioning;

/// <summary>
/// Memory measurements: they read the whole process's heap, so they run alone (see <see cref="SoloCollection"/>).
/// </summary>
[Collection(SoloCollection.Name)]
public class PartitionedMemoryTests(ITestOutputHelper output)
{
    [Fact]
    public void AttemptAcquire_TenMillionDistinctKeys_StaysWithinMaxPartitionsAndMemoryBound()
    {
        const int MaxPartitions = 1_000_000;
        var time = new FakeTimeProvider();
        var options = new FixedWindowRateLimiterOptions { PermitLimit = 5, Window = TimeSpan.FromMinutes(1) };
        using var limiter = PartitionedLimiter.CreateFixedWindow<int, int>(key => key, _ => options, new() { TimeProvider = time, MaxPartitions = MaxPartitions });
        var diagnostics = (IPartitionDiagnostics)limiter;
        long before = GC.GetTotalMemory(forceFullCollection: true);
        long refused = 0;
        long peakBytes = 0;
        var stopwatch = Stopwatch.StartNew();
        for (int key = 0; key < 10_000_000; key++)
        {
            if (key % 2_500_000 == 0 && key > 0)
            {
                peakBytes = Math.Max(peakBytes, GC.GetTotalMemory(forceFullCollection: true) - before);

                // Every held key goes idle; the flood goes on with new keys, which take the idle ones' places.
                time.Advance(TimeSpan.FromMinutes(2));
            }

            if (!limiter.AttemptAcquire(key).IsAcquired)
            {
                refused++;
            }
        }

        peakBytes = Math.Max(peakBytes, GC.GetTotalMemory(forceFullCollection: true) - before);
        double bytesPerKey = (double)peakBytes / MaxPartitions;
        output.WriteLine($"10M keys in {stopwatch.ElapsedMilliseconds} ms: {refused:N0} refused, {diagnostics.PartitionCount:N0} held, peak {peakBytes / 1e6:N1} MB ({bytesPerKey:N1} B per held key at the cap)");
        Assert.InRange(diagnostics.PartitionCount, MaxPartitions * 9 / 10, MaxPartitions);
        Assert.InRange(refused, 1, 10_000_000 - 4 * (MaxPartitions * 9L / 10));
        Assert.True(bytesPerKey <= 80, $"{bytesPerKey:N1} bytes per key");
    }
}
