using System.Threading.RateLimiting;

namespace RateEngine.Tests.Support;

/// <summary>
/// The exact, obviously-correct reference for each algorithm's decisions on a monotone clock with nothing queued:
/// a full list of admissions (or, for the bucket, a rational token count), recomputed from scratch at every question.
/// </summary>
public sealed class ReferenceModel(LimiterSpec spec)
{
    private readonly List<Admitted> _admitted = [];
    private Int128 _tokensTimesPeriod = (Int128)spec.Limit * spec.WindowTicks;
    private long _lastRefill;

    /// <summary>Permits a request could take at <paramref name="now"/>.</summary>
    public long Available(long now) => spec.Kind switch
    {
        LimiterKind.Log => spec.Limit - _admitted.Where(a => a.Stamp > now - spec.WindowTicks).Sum(a => (long)a.Permits),
        LimiterKind.Fixed => spec.Limit - _admitted.Where(a => a.Stamp / spec.WindowTicks == now / spec.WindowTicks).Sum(a => (long)a.Permits),
        LimiterKind.Counter => spec.Limit - _admitted
            .Where(a => a.Stamp / spec.SegmentTicks >= (now / spec.SegmentTicks) - spec.Segments)
            .Sum(a => (long)a.Permits),
        LimiterKind.Bucket => (long)(TokensAt(now) / spec.WindowTicks),
        _ => throw new InvalidOperationException(),
    };

    /// <summary>Would <c>AttemptAcquire(permits)</c> succeed at <paramref name="now"/>? Zero permits probes for one.</summary>
    public bool Admits(long now, int permits) => Available(now) >= Math.Max(1, permits);

    /// <summary>The least number of ticks after which <c>AttemptAcquire(permits)</c> would succeed, searched exactly.</summary>
    public long TicksUntilAdmitted(long now, int permits)
    {
        long high = 1;
        while (!Admits(now + high, permits))
        {
            high *= 2;
        }

        long low = 0;
        while (low < high)
        {
            long middle = low + ((high - low) / 2);
            if (Admits(now + middle, permits))
            {
                high = middle;
            }
            else
            {
                low = middle + 1;
            }
        }

        return low;
    }

    /// <summary>
    /// Checks one <c>AttemptAcquire(permits)</c> at <paramref name="now"/> against the model: the available count read
    /// just before it, the decision, and a refusal's RETRY_AFTER; then records an admission.
    /// </summary>
    public void Check(long now, int permits, long availableBefore, RateLimitLease lease, string context)
    {
        Assert.Equal(Available(now), availableBefore);
        bool expected = Admits(now, permits);
        Assert.True(expected == lease.IsAcquired, $"{context} at {now}: AttemptAcquire({permits}) expected {expected}");
        if (lease.IsAcquired && permits > 0)
        {
            Record(now, permits);
        }

        if (!lease.IsAcquired)
        {
            Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
            Assert.Equal(TicksUntilAdmitted(now, permits), retryAfter.Ticks);
        }
    }

    public void Record(long now, int permits)
    {
        if (spec.Kind == LimiterKind.Bucket)
        {
            _tokensTimesPeriod = TokensAt(now) - ((Int128)permits * spec.WindowTicks);
            _lastRefill = now;
        }

        _admitted.Add(new Admitted(now, permits));
    }

    private Int128 TokensAt(long now)
    {
        Int128 full = (Int128)spec.Limit * spec.WindowTicks;
        Int128 refilled = _tokensTimesPeriod + ((Int128)(now - _lastRefill) * spec.TokensPerPeriod);
        return refilled > full ? full : refilled;
    }
}
