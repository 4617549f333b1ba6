namespace RateEngine.Benchmarks.Compare;

/// <summary>One first-touch run: new keys, time, resident bytes per key, bytes allocated per key on the touching thread.</summary>
internal readonly record struct FirstTouchSample(int Keys, TimeSpan Elapsed, double ResidentBytesPerKey, double AllocatedBytesPerKey)
{
    public double KeysPerSecond => Keys / Elapsed.TotalSeconds;
}
