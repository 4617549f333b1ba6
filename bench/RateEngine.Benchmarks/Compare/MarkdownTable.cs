using System.Text;

namespace RateEngine.Benchmarks.Compare;

/// <summary>
/// The one writer of the reports' tables: markdown whose columns are padded to a common width, so that the same text
/// reads as a table on a console and renders as one in compare.md.
/// </summary>
internal static class MarkdownTable
{
    public static string Render(string[] header, bool[] rightAligned, IReadOnlyList<string[]> rows)
    {
        int columns = header.Length;
        var widths = new int[columns];
        for (int c = 0; c < columns; c++)
        {
            widths[c] = Math.Max(3, rows.Select(r => r[c].Length).Append(header[c].Length).Max());
        }

        var text = new StringBuilder();
        AppendRow(header);
        text.Append('|');
        for (int c = 0; c < columns; c++)
        {
            text.Append(rightAligned[c] ? new string('-', widths[c] + 1) + ":|" : ":" + new string('-', widths[c] + 1) + "|");
        }

        text.AppendLine();
        foreach (string[] row in rows)
        {
            AppendRow(row);
        }

        return text.ToString().TrimEnd();

        void AppendRow(string[] cells)
        {
            text.Append('|');
            for (int c = 0; c < columns; c++)
            {
                string cell = rightAligned[c] ? cells[c].PadLeft(widths[c]) : cells[c].PadRight(widths[c]);
                text.Append(' ').Append(cell).Append(" |");
            }

            text.AppendLine();
        }
    }
}
