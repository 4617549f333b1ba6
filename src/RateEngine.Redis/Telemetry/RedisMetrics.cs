using System.Diagnostics.Metrics;

namespace RateEngine.Redis.Telemetry;

/// <summary>
/// The Redis mode's instruments, on the <c>RateEngine</c> meter: script calls, failed calls, and whether each limiter is
/// degraded (its breaker open). Tags are the limiter's key prefix and mode, never a partition key.
/// </summary>
internal sealed class RedisMetrics
{
    public const string MeterName = "RateEngine";

    private static readonly Meter SharedMeter = new(MeterName);

    private readonly Counter<long> _roundTrips;
    private readonly Counter<long> _failures;
    private readonly UpDownCounter<long> _degraded;
    private readonly KeyValuePair<string, object?>[] _tags;

    public RedisMetrics(IMeterFactory? meterFactory, string keyPrefix, bool hybrid)
    {
        Meter meter = meterFactory?.Create(MeterName) ?? SharedMeter;
        _roundTrips = meter.CreateCounter<long>("rateengine.redis.round_trips", "{call}", "Script calls to Redis: acquires in exact mode, reservations and returns in hybrid mode.");
        _failures = meter.CreateCounter<long>("rateengine.redis.failures", "{call}", "Script calls that failed or timed out.");
        _degraded = meter.CreateUpDownCounter<long>("rateengine.redis.degraded", "{limiter}", "Limiters answering by their failure mode because Redis does not.");
        _tags = [new("rateengine.limiter", keyPrefix), new("rateengine.redis.mode", hybrid ? "hybrid" : "exact")];
    }

    public void RoundTrip() => _roundTrips.Add(1, _tags);

    public void Failure() => _failures.Add(1, _tags);

    public void Degraded(bool degraded) => _degraded.Add(degraded ? 1 : -1, _tags);
}
