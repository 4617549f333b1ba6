using System.Runtime.ExceptionServices;

namespace RateEngine.Policies;

/// <summary>Calls the listeners a builder combined into one delegate (<c>+=</c>) one by one.</summary>
internal static class Listeners
{
    /// <summary>
    /// Calls each listener of <paramref name="listeners"/> on its own, so that one that throws does not keep the call from
    /// the others: whether any returned normally, and the first exception in <paramref name="failure"/> (unless it holds one).
    /// </summary>
    public static bool InvokeEach<T>(Action<T> listeners, T argument, ref ExceptionDispatchInfo? failure)
    {
        if (listeners.HasSingleTarget)
        {
            return Invoke(listeners, argument, ref failure);
        }

        bool taken = false;
        foreach (Action<T> listener in listeners.GetInvocationList().Cast<Action<T>>())
        {
            taken |= Invoke(listener, argument, ref failure);
        }

        return taken;
    }

    private static bool Invoke<T>(Action<T> listener, T argument, ref ExceptionDispatchInfo? failure)
    {
        try
        {
            listener(argument);
            return true;
        }
        catch (Exception error)
        {
            failure ??= ExceptionDispatchInfo.Capture(error);
            return false;
        }
    }
}
