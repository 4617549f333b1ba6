using System.Threading.RateLimiting;

namespace RateEngine.Benchmarks.Policies;

/// <summary>One thread's way through the requests: its own cursor, so threads visit users in different orders.</summary>
internal sealed class PolicyCursor(BenchRequest[] requests, int start)
{
    public readonly BenchRequest[] Requests = requests;
    public int Next = start;
}

/// <summary>The measured operations: each returns how many of its attempts were admitted.</summary>
internal static class PolicyLoops
{
    /// <summary>RateEngine: <c>Acquire(request, estimate)</c> + <c>Dispose</c> (the estimate is kept).</summary>
    public static long Acquire(RatePolicy<BenchRequest> policy, PolicyCursor cursor, long operations)
    {
        long acquired = 0;
        BenchRequest[] requests = cursor.Requests;
        int next = cursor.Next;
        for (long i = 0; i < operations; i++)
        {
            using PolicyLease lease = policy.Acquire(requests[next], PolicySubjects.Estimate);
            acquired += lease.IsAcquired ? 1 : 0;
            next = next + 1 == requests.Length ? 0 : next + 1;
        }

        cursor.Next = next;
        return acquired;
    }

    /// <summary>RateEngine as a gateway uses it: acquire, reconcile the actual (a fifth of the estimate), dispose.</summary>
    public static long AcquireReconcile(RatePolicy<BenchRequest> policy, PolicyCursor cursor, long operations)
    {
        long acquired = 0;
        BenchRequest[] requests = cursor.Requests;
        int next = cursor.Next;
        var actual = new RequestCost(PolicySubjects.Estimate.Tokens / 5, PolicySubjects.Estimate.Money / 5);
        for (long i = 0; i < operations; i++)
        {
            using PolicyLease lease = policy.Acquire(requests[next], PolicySubjects.Estimate);
            if (lease.IsAcquired)
            {
                lease.Reconcile(actual);
                acquired++;
            }

            next = next + 1 == requests.Length ? 0 : next + 1;
        }

        cursor.Next = next;
        return acquired;
    }

    /// <summary>The in-box chain: <c>AttemptAcquire(request)</c> + <c>Dispose</c>.</summary>
    public static long InBox(PartitionedRateLimiter<BenchRequest> chain, PolicyCursor cursor, long operations)
    {
        long acquired = 0;
        BenchRequest[] requests = cursor.Requests;
        int next = cursor.Next;
        for (long i = 0; i < operations; i++)
        {
            using RateLimitLease lease = chain.AttemptAcquire(requests[next]);
            acquired += lease.IsAcquired ? 1 : 0;
            next = next + 1 == requests.Length ? 0 : next + 1;
        }

        cursor.Next = next;
        return acquired;
    }
}
