namespace RateEngine.Redis;

/// <summary>Observes the exception of a call given up on (timed out, cancelled, fire-and-forget), so none is left unobserved.</summary>
internal static class TaskObserver
{
    public static void Observe(Task task) =>
        task.ContinueWith(static done => _ = done.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
}
