namespace RateEngine.Timing;

/// <summary>
/// Timers made without the caller's execution context. A timer captures the context it is made in and runs every callback
/// under it for its whole life (the first request's async locals, its activity), while a library's timer serves every
/// caller, not the one that happened to make it.
/// </summary>
internal static class ContextFreeTimer
{
    public static ITimer Create(TimeProvider provider, TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        using (ExecutionContext.SuppressFlow())
        {
            return provider.CreateTimer(callback, state, dueTime, period);
        }
    }
}
