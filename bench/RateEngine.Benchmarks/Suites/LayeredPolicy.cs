using System.Threading.RateLimiting;
using BenchmarkDotNet.Attributes;
using RateEngine.Benchmarks.Policies;

namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// Issue 10's five-layer policy (ip, user, tool, tokens per minute, daily cents) for 10,000 users on one thread: RateEngine's
/// <see cref="RatePolicy{TContext}"/> against five in-box partitioned limiters chained with <c>CreateChained</c> (baseline).
/// Each invocation is 1,024 requests in a seeded random order.
/// </summary>
[MemoryDiagnoser]
public class LayeredPolicy
{
    private const int Requests = 1_024;

    private BenchRequest[] _requests = null!;
    private RatePolicy<BenchRequest> _policy = null!;
    private PartitionedRateLimiter<BenchRequest> _chain = null!;
    private PolicyCursor _policyCursor = null!;
    private PolicyCursor _reconcileCursor = null!;
    private PolicyCursor _chainCursor = null!;

    [GlobalSetup]
    public void Setup()
    {
        _requests = PolicySubjects.Requests();
        _policy = PolicySubjects.RateEngine();
        _chain = PolicySubjects.InBoxChain();
        _policyCursor = new PolicyCursor(_requests, 0);
        _reconcileCursor = new PolicyCursor(_requests, 0);
        _chainCursor = new PolicyCursor(_requests, 0);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _policy.Dispose();
        _chain.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Requests)]
    public long InBoxChain() => PolicyLoops.InBox(_chain, _chainCursor, Requests);

    [Benchmark(OperationsPerInvoke = Requests)]
    public long RateEnginePolicy() => PolicyLoops.Acquire(_policy, _policyCursor, Requests);

    [Benchmark(OperationsPerInvoke = Requests)]
    public long RateEnginePolicyWithReconcile() => PolicyLoops.AcquireReconcile(_policy, _reconcileCursor, Requests);
}
