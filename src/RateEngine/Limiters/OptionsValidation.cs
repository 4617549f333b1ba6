namespace RateEngine;

/// <summary>Constructor-time checks with the in-box limiters' exception types, parameter name and wording.</summary>
internal static class OptionsValidation
{
    public static ArgumentException GreaterThanZero(string option) =>
        new($"{option} must be set to a value greater than 0.", "options");

    public static ArgumentException GreaterThanOrEqualZero(string option) =>
        new($"{option} must be set to a value greater than or equal to 0.", "options");

    public static ArgumentException GreaterThanZeroSpan(string option) =>
        new($"{option} must be set to a value greater than TimeSpan.Zero.", "options");

    public static ArgumentException Invalid(string option, string requirement) =>
        new($"{option} {requirement}", "options");

    public static TimeProvider NotNull(TimeProvider? timeProvider, string paramName) =>
        timeProvider ?? throw new ArgumentNullException(paramName);
}
