using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests;

public class SmokeTests
{
    [Fact]
    public void Log_AdmitsUpToLimitThenRejects()
    {
        var time = new FakeTimeProvider();
        using var limiter = new SlidingWindowLogRateLimiter(new() { PermitLimit = 2, Window = TimeSpan.FromSeconds(1), TimeProvider = time });
        Assert.True(limiter.AttemptAcquire().IsAcquired);
        Assert.True(limiter.AttemptAcquire().IsAcquired);
        using var lease = limiter.AttemptAcquire();
        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retry));
        Assert.Equal(TimeSpan.FromSeconds(1), retry);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(limiter.AttemptAcquire().IsAcquired);
    }
}
