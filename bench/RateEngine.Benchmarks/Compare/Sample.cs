namespace RateEngine.Benchmarks.Compare;

/// <summary>One timed run: operations, admissions among them, elapsed time and bytes allocated.</summary>
internal readonly record struct Sample(long Operations, long Acquired, TimeSpan Elapsed, long AllocatedBytes)
{
    public double NanosecondsPerOperation => Elapsed.TotalNanoseconds / Operations;

    public double OperationsPerSecond => Operations / Elapsed.TotalSeconds;

    public double BytesPerOperation => (double)AllocatedBytes / Operations;
}
