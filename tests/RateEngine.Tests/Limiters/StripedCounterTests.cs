using RateEngine.Limiters;

namespace RateEngine.Tests.Limiters;

/// <summary>The statistics counter: per-thread cells written without atomics, exact once the writers are done.</summary>
public sealed class StripedCounterTests
{
    [Fact]
    public void Sum_WritesWhileNewThreadsGrowTheCells_CountsEveryIncrementAndDecrement()
    {
        // One thread counts without pause while 300 threads, alive at once (so each has an id of its own), take their first
        // cells and grow the cell array several times over: a growth that copied counts instead of cells would lose the
        // writes made while it copied.
        var counter = new StripedCounter();
        using var release = new ManualResetEventSlim();
        int firstCounts = 0;
        bool stop = false;
        long written = 0;
        var writer = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                counter.Increment();
                counter.Increment();
                counter.Decrement();
                written++;
            }
        });
        writer.Start();
        Thread[] newcomers = [.. Enumerable.Range(0, 300).Select(_ => new Thread(() =>
        {
            counter.Increment();
            Interlocked.Increment(ref firstCounts);
            release.Wait();
        }))];

        foreach (Thread thread in newcomers)
        {
            thread.Start();
        }

        SpinWait.SpinUntil(() => Volatile.Read(ref firstCounts) == 300);
        Volatile.Write(ref stop, true);
        writer.Join();
        release.Set();
        foreach (Thread thread in newcomers)
        {
            thread.Join();
        }

        Assert.Equal(written + 300, counter.Sum());
    }

    [Fact]
    public void Sum_ThreadsThatEndedAndThreadsThatReusedTheirIds_KeepEveryCount()
    {
        // The runtime hands a dead thread's managed id to a new thread, which then writes the same cell: nothing is lost.
        var counter = new StripedCounter();
        for (int round = 0; round < 40; round++)
        {
            var thread = new Thread(() =>
            {
                for (int i = 0; i < 1_000; i++)
                {
                    counter.Increment();
                }
            });
            thread.Start();
            thread.Join();
        }

        counter.Decrement();
        Assert.Equal(39_999, counter.Sum());
    }
}
