namespace RateEngine.Benchmarks.Suites;

/// <summary>
/// A fixed team of threads for BenchmarkDotNet's contention suite: <see cref="Run"/> runs one body on every member at once
/// (the calling thread is member 0) and returns when all are done. Threads are created once, so an invocation pays only for
/// two barrier phases, not for thread start-up.
/// </summary>
internal sealed class ThreadTeam : IDisposable
{
    private readonly Barrier _barrier;
    private readonly Thread[] _workers;
    private Action<int>? _body;
    private volatile bool _stopping;
    private Exception? _failure;

    public ThreadTeam(int size)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        Size = size;
        _barrier = new Barrier(size);
        _workers = new Thread[size - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            int member = i + 1;
            _workers[i] = new Thread(() => Work(member)) { IsBackground = true, Name = $"team-{member}" };
            _workers[i].Start();
        }
    }

    public int Size { get; }

    public void Run(Action<int> body)
    {
        _body = body;
        _barrier.SignalAndWait();
        try
        {
            body(0);
        }
        finally
        {
            _barrier.SignalAndWait();
        }

        if (Interlocked.Exchange(ref _failure, null) is { } failure)
        {
            throw new InvalidOperationException("A team thread failed.", failure);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _barrier.SignalAndWait();
        foreach (Thread worker in _workers)
        {
            worker.Join();
        }

        _barrier.Dispose();
    }

    private void Work(int member)
    {
        while (true)
        {
            _barrier.SignalAndWait();
            if (_stopping)
            {
                return;
            }

            try
            {
                _body!(member);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, e, null);
            }

            _barrier.SignalAndWait();
        }
    }
}
