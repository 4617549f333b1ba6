namespace RateEngine.Benchmarks;

/// <summary>Checks that stay on in Release: a benchmark that measured the wrong path must fail, not report.</summary>
internal static class Check
{
    public static void That(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(message);
        }
    }
}
