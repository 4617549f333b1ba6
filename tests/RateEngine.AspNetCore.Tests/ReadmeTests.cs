using System.Runtime.CompilerServices;

namespace RateEngine.AspNetCore.Tests;

public sealed class ReadmeTests
{
    [Fact]
    public void Readme_ShowsTheSamplesRegistrationVerbatim()
    {
        string program = File.ReadAllText(Path.Combine(Root(), "src", "RateEngine.Samples.AiGateway", "Program.cs")).ReplaceLineEndings("\n");
        int begin = program.IndexOf("// README:aspnet:begin\n", StringComparison.Ordinal);
        int end = program.IndexOf("// README:aspnet:end", StringComparison.Ordinal);
        Assert.True(begin >= 0 && end > begin, "the markers are missing from the sample's Program.cs");
        string[] lines = program[(begin + "// README:aspnet:begin\n".Length)..end].TrimEnd().Split('\n');
        int indent = lines.Where(line => line.Trim().Length > 0).Min(line => line.Length - line.TrimStart().Length);
        string snippet = string.Join('\n', lines.Select(line => line.Length >= indent ? line[indent..] : line.TrimStart()));

        Assert.Contains(snippet, File.ReadAllText(Path.Combine(Root(), "README.md")).ReplaceLineEndings("\n"), StringComparison.Ordinal);
    }

    private static string Root([CallerFilePath] string here = "") => Path.GetFullPath(Path.Combine(Path.GetDirectoryName(here)!, "..", ".."));
}
