using System.Runtime.ExceptionServices;
using StackExchange.Redis;

namespace RateEngine.Redis;

/// <summary>How the Redis mode waits: the sync paths block at most a bound, and no call given up on goes unobserved.</summary>
internal static class RedisTasks
{
    /// <summary>
    /// Runs <paramref name="work"/> without the caller's execution context flowing into what it starts (a reservation or a
    /// send that serves every caller of a key, not this one's request); as is when the flow is suppressed already.
    /// </summary>
    public static TResult WithoutFlow<TState, TResult>(Func<TState, TResult> work, TState state)
    {
        if (ExecutionContext.IsFlowSuppressed())
        {
            return work(state);
        }

        using (ExecutionContext.SuppressFlow())
        {
            return work(state);
        }
    }

    /// <inheritdoc cref="WithoutFlow{TState, TResult}(Func{TState, TResult}, TState)"/>
    public static void WithoutFlow<TState>(Action<TState> work, TState state) =>
        WithoutFlow(
            static inner =>
            {
                inner.Work(inner.State);
                return 0;
            },
            (Work: work, State: state));

    /// <summary>Observes the exception of a call given up on (timed out, cancelled, fire-and-forget).</summary>
    public static void Observe(Task task) =>
        task.ContinueWith(static done => _ = done.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    /// <summary>Blocks at most <paramref name="bound"/> for <paramref name="task"/>; throws its own exception, or a <see cref="TimeoutException"/>.</summary>
    public static void WaitWithin(Task task, TimeSpan bound)
    {
        try
        {
            if (!task.Wait(bound))
            {
                Observe(task);
                throw new TimeoutException($"Redis did not answer within {bound.TotalMilliseconds:F0} ms.");
            }
        }
        catch (AggregateException error) when (error.InnerExceptions.Count == 1)
        {
            ExceptionDispatchInfo.Throw(error.InnerException!);
        }
    }

    /// <summary>
    /// One write of <paramref name="key"/> (a marker that expires in 10 s), given up after <paramref name="bound"/>: routed
    /// to the key's primary as the scripts are, so it fails where they do (a replica, a primary out of memory) and a PING
    /// answered by any server does not.
    /// </summary>
    public static async Task WriteWithin(IDatabase database, RedisKey key, TimeSpan bound, CancellationToken cancellationToken)
    {
        Task<bool>? write = null;
        try
        {
            write = database.StringSetAsync(key, "1", TimeSpan.FromSeconds(10));
            await write.WaitAsync(bound, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            if (write is not null)
            {
                Observe(write);
            }

            throw;
        }
    }

    /// <summary>One PING, given up after <paramref name="bound"/> (a stopped server never answers).</summary>
    public static async Task<TimeSpan> PingWithin(IDatabase database, TimeSpan bound, CancellationToken cancellationToken)
    {
        Task<TimeSpan> ping = database.PingAsync();
        try
        {
            return await ping.WaitAsync(bound, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Observe(ping);
            throw;
        }
    }
}
