using System.Diagnostics.CodeAnalysis;

namespace RateEngine.Limiters;

/// <summary>
/// Throws, out of line: keeping the message formatting out of the acquire methods lets their checks stay a compare and
/// a branch, and lets the JIT inline them.
/// </summary>
internal static class ThrowHelper
{
    /// <summary>Throws when a request asks for more permits than the limit (the in-box exception and parameter name).</summary>
    public static void CheckPermitCount(int permitCount, long permitLimit, string paramName)
    {
        if (permitCount > permitLimit)
        {
            PermitCountExceedsLimit(paramName, permitCount, permitLimit);
        }
    }

    /// <remarks>The in-box message too: a token bucket (whose count is <c>tokenCount</c>) speaks of tokens.</remarks>
    [DoesNotReturn]
    public static void PermitCountExceedsLimit(string paramName, int permitCount, long permitLimit) =>
        throw new ArgumentOutOfRangeException(paramName, permitCount, paramName == "tokenCount"
            ? $"{permitCount} token(s) exceeds the token limit of {permitLimit}."
            : $"{permitCount} permit(s) exceeds the permit limit of {permitLimit}.");

    [DoesNotReturn]
    public static void NullPartitionKey(string paramName) =>
        throw new ArgumentNullException(
            paramName,
            "The partition key selector returned null for this resource. Null is not a key: map requests without one " +
            "(anonymous users, say) to a key of their own, such as the client address.");

    [DoesNotReturn]
    public static void Disposed(object instance) => throw new ObjectDisposedException(instance.GetType().FullName);
}
