using System.Globalization;

namespace RateEngine.Benchmarks.Compare;

/// <summary>How the reports write a figure in a table cell or a sentence: invariant culture, a few significant digits.</summary>
internal static class Cells
{
    public static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string Ns(double value) => value.ToString(value < 10 ? "F2" : "F1", Invariant);

    public static string Ratio(double value) => value.ToString("0.00", Invariant) + "×";

    public static string Percent(double value) => (value * 100).ToString("F0", Invariant) + " %";

    public static string Bytes(double value) => value == 0 ? "0" : value.ToString(value < 1 ? "0.###" : "F1", Invariant);

    public static string Rate(double value) => value switch
    {
        >= 1e9 => (value / 1e9).ToString("F2", Invariant) + " G",
        >= 1e6 => (value / 1e6).ToString("F1", Invariant) + " M",
        >= 1e3 => (value / 1e3).ToString("F1", Invariant) + " k",
        _ => value.ToString("F0", Invariant),
    };
}
