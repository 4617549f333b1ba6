using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests.Support;

/// <summary>
/// A real <c>redis-server</c> on 127.0.0.1 and a free port, with no persistence, for one test class or collection. A missing
/// binary fails the test loudly (tests/run.sh installs it).
/// </summary>
public sealed class RedisServer : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("rateengine-redis-").FullName;
    private readonly bool _clusterNode;
    private Process? _process;

    public RedisServer()
        : this(clusterNode: false)
    {
    }

    /// <param name="clusterNode">Start it as a node of a Redis Cluster (see <see cref="RedisCluster"/>); its bus port is the port + 10000.</param>
    internal RedisServer(bool clusterNode)
    {
        _clusterNode = clusterNode;

        // A port found free can be taken by another process before redis-server binds it (test classes run in parallel and
        // start servers of their own): this server then exits, and a PING could reach the other one. So the server must
        // answer as this one, or another port is tried.
        for (int attempt = 1; ; attempt++)
        {
            Port = clusterNode ? FreeClusterPort() : FreePort();
            try
            {
                Start();
                return;
            }
            catch (PortTakenException) when (attempt < 5)
            {
                Kill();
                _process?.Dispose();
            }
        }
    }

    public int Port { get; private set; }

    public string Endpoint => $"127.0.0.1:{Port}";

    /// <summary>A new connection (a "node"): each test node has its own multiplexer, as separate servers would.</summary>
    public ConnectionMultiplexer Connect(bool admin = false) =>
        ConnectionMultiplexer.Connect($"{Endpoint},abortConnect=false,connectTimeout=2000,syncTimeout=2000,asyncTimeout=2000,connectRetry=1,allowAdmin={admin}");

    public void Start()
    {
        string binary = FindBinary()
            ?? throw new InvalidOperationException("redis-server is not on PATH: these tests need a real Redis (tests/run.sh installs Debian's redis-server).");
        var start = new ProcessStartInfo(binary)
        {
            ArgumentList = { "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", _directory },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (_clusterNode)
        {
            foreach (string argument in new[] { "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000" })
            {
                start.ArgumentList.Add(argument);
            }
        }

        _process = Process.Start(start) ?? throw new InvalidOperationException("redis-server did not start.");
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        WaitUntilServing();
    }

    /// <summary>Kills the server (a crash, not a shutdown).</summary>
    /// <summary>Stops the server's process (SIGSTOP): it keeps its connections and answers nothing until <see cref="Thaw"/>.</summary>
    public void Freeze() => Signal("STOP");

    /// <summary>Lets a frozen server go on (SIGCONT): it then answers what it was sent meanwhile.</summary>
    public void Thaw() => Signal("CONT");

    public void Kill()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
    }

    public void Dispose()
    {
        Kill();
        _process?.Dispose();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
            // a temporary directory left behind is harmless
        }
    }

    private void Signal(string signal)
    {
        using Process kill = Process.Start("kill", $"-{signal} {_process!.Id}") ?? throw new InvalidOperationException("kill did not start.");
        kill.WaitForExit();
        if (kill.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill -{signal} failed with exit code {kill.ExitCode}.");
        }
    }

    private static string? FindBinary() =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(directory => Path.Combine(directory, "redis-server"))
            .FirstOrDefault(File.Exists);

    /// <summary>A free port whose cluster bus port (+ 10000) is free as well.</summary>
    private static int FreeClusterPort()
    {
        for (int attempt = 0; ; attempt++)
        {
            int port = FreePort();
            if (port < 55_000 && IsFree(port + 10_000))
            {
                return port;
            }

            if (attempt > 200)
            {
                throw new InvalidOperationException("No free pair of ports (port, port + 10000) for a cluster node.");
            }
        }
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private void WaitUntilServing()
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                using var client = new TcpClient();
                client.Connect(IPAddress.Loopback, Port);
                using NetworkStream stream = client.GetStream();
                stream.Write("PING\r\n"u8);
                var reply = new byte[7];
                if (stream.Read(reply) > 0 && reply[0] == (byte)'+')
                {
                    if (!AnswersAsThisServer(stream))
                    {
                        throw new PortTakenException($"Port {Port} is served by another redis-server.");
                    }

                    return;
                }
            }
            catch (SocketException) when (clock.Elapsed < TimeSpan.FromSeconds(10))
            {
            }

            if (_process!.HasExited)
            {
                throw new PortTakenException($"redis-server on port {Port} exited before it answered (exit code {_process.ExitCode}): the port was taken.");
            }

            if (clock.Elapsed > TimeSpan.FromSeconds(10))
            {
                throw new InvalidOperationException($"redis-server on port {Port} did not answer PING within 10 s.");
            }

            Thread.Sleep(20);
        }
    }

    /// <summary>Whether the server on the port is this one: its working directory is this server's own temporary one.</summary>
    private bool AnswersAsThisServer(NetworkStream stream)
    {
        stream.Write("CONFIG GET dir\r\n"u8);
        var reply = new System.Text.StringBuilder();
        var buffer = new byte[1024];
        string leaf = Path.GetFileName(_directory);
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(5))
        {
            int read = stream.Read(buffer);
            if (read <= 0)
            {
                break;
            }

            // "*2\r\n$3\r\ndir\r\n$<n>\r\n<path>\r\n", perhaps after the end of the PING's reply: this server's once the
            // path shows; another's once the reply is whole (five line ends, six with the PING's) without it.
            reply.Append(System.Text.Encoding.UTF8.GetString(buffer, 0, read));
            string text = reply.ToString();
            if (text.Contains(leaf, StringComparison.Ordinal))
            {
                return true;
            }

            if (text.Split("\r\n").Length > 7)
            {
                return false;
            }
        }

        return false;
    }

    /// <summary>The port chosen was bound by another process first.</summary>
    private sealed class PortTakenException(string message) : Exception(message);
}
