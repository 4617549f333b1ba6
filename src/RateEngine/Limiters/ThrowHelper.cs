using System.Diagnostics.CodeAnalysis;

namespace RateEngine;

/// <summary>
/// Throws, out of line: keeping the message formatting out of the acquire methods lets their checks stay a compare and
/// a branch, and lets the JIT inline them.
/// </summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void PermitCountExceedsLimit(string paramName, int permitCount, long permitLimit) =>
        throw new ArgumentOutOfRangeException(paramName, permitCount, $"{permitCount} permit(s) exceeds the permit limit of {permitLimit}.");

    [DoesNotReturn]
    public static void Disposed(object instance) => throw new ObjectDisposedException(instance.GetType().FullName);
}
