namespace RateEngine.Limiters;

/// <summary>Constructor-time checks with the in-box limiters' exception types, parameter name and wording.</summary>
internal static class OptionsValidation
{
    public static void Positive(int value, string option)
    {
        if (value <= 0)
        {
            throw new ArgumentException($"{option} must be set to a value greater than 0.", "options");
        }
    }

    public static void NotNegative(int value, string option)
    {
        if (value < 0)
        {
            throw new ArgumentException($"{option} must be set to a value greater than or equal to 0.", "options");
        }
    }

    public static void Positive(TimeSpan value, string option)
    {
        if (value <= TimeSpan.Zero)
        {
            throw new ArgumentException($"{option} must be set to a value greater than TimeSpan.Zero.", "options");
        }
    }

    public static ArgumentException Invalid(string option, string requirement) =>
        new($"{option} {requirement}", "options");
}
