using System.Globalization;
using StackExchange.Redis;

namespace RateEngine.Benchmarks.Redis;

/// <summary>
/// The server's <c>INFO commandstats</c>: calls per command since the server started. The difference of two readings is what
/// the limiters sent in between, counted by Redis itself rather than by the client.
/// </summary>
internal sealed class CommandStats
{
    /// <summary>The clients' own upkeep (connects, heartbeats, these readings), which no limiter decision needs.</summary>
    private static readonly HashSet<string> Housekeeping = new(StringComparer.Ordinal)
    {
        "info", "ping", "client", "config", "cluster", "echo", "subscribe", "unsubscribe", "hello", "command", "select", "role", "auth",
    };

    private readonly Dictionary<string, long> _calls;

    private CommandStats(Dictionary<string, long> calls) => _calls = calls;

    public static async Task<CommandStats> ReadAsync(IServer server)
    {
        var calls = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (IGrouping<string, KeyValuePair<string, string>> section in await server.InfoAsync("commandstats").ConfigureAwait(false))
        {
            foreach (KeyValuePair<string, string> entry in section)
            {
                // cmdstat_evalsha:calls=12,usec=34,... (SE.Redis splits the line at the first ':')
                if (!entry.Key.StartsWith("cmdstat_", StringComparison.Ordinal))
                {
                    continue;
                }

                string field = entry.Value.Split(',')[0];
                calls[entry.Key["cmdstat_".Length..].ToLowerInvariant()] = long.Parse(field["calls=".Length..], CultureInfo.InvariantCulture);
            }
        }

        return new CommandStats(calls);
    }

    /// <summary>Commands per name sent between <paramref name="before"/> and this reading, housekeeping left out.</summary>
    public IReadOnlyDictionary<string, long> Since(CommandStats before) => _calls
        .Where(entry => !Housekeeping.Contains(entry.Key))
        .Select(entry => (entry.Key, Calls: entry.Value - before._calls.GetValueOrDefault(entry.Key)))
        .Where(entry => entry.Calls > 0)
        .ToDictionary(entry => entry.Key, entry => entry.Calls, StringComparer.Ordinal);

    /// <summary>
    /// Round trips among <paramref name="commands"/>, the commands a client sent and waited for. A script's own calls
    /// (<c>TIME</c>, <c>HSET</c>, … inside <c>EVALSHA</c>) show in commandstats but travel with it, so a design that runs
    /// scripts makes one round trip per <c>EVALSHA</c>/<c>EVAL</c>/<c>SCRIPT</c>. Otherwise every command is one, except a
    /// <c>MULTI</c> … <c>EXEC</c> block, which SE.Redis sends as one write and reads as one reply: its <c>MULTI</c> and its
    /// queued commands count as one round trip with its <c>EXEC</c>.
    /// </summary>
    public static long RoundTrips(IReadOnlyDictionary<string, long> commands, bool scripted, int queuedPerTransaction)
    {
        if (scripted)
        {
            return commands.GetValueOrDefault("evalsha") + commands.GetValueOrDefault("eval") + commands.GetValueOrDefault("script");
        }

        long transactions = commands.GetValueOrDefault("exec");
        return commands.Values.Sum() - (transactions * (1 + queuedPerTransaction));
    }
}
