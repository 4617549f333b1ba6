using System.Diagnostics;
using StackExchange.Redis;

namespace RateEngine.Redis.Tests.Support;

/// <summary>A real Redis Cluster of three masters on 127.0.0.1 (no replicas), created with <c>redis-cli --cluster create</c>.</summary>
public sealed class RedisCluster : IDisposable
{
    private readonly RedisServer[] _nodes;

    public RedisCluster()
    {
        _nodes = [new RedisServer(clusterNode: true), new RedisServer(clusterNode: true), new RedisServer(clusterNode: true)];
        var create = new ProcessStartInfo("redis-cli") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string argument in new[] { "--cluster", "create" }.Concat(_nodes.Select(node => node.Endpoint)).Concat(["--cluster-replicas", "0", "--cluster-yes"]))
        {
            create.ArgumentList.Add(argument);
        }

        using Process process = Process.Start(create) ?? throw new InvalidOperationException("redis-cli did not start.");
        string output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"redis-cli --cluster create failed: {output}");
        }

        WaitUntilReady();
    }

    public string Endpoints => string.Join(',', _nodes.Select(node => node.Endpoint));

    public ConnectionMultiplexer Connect(bool admin = false) =>
        ConnectionMultiplexer.Connect($"{Endpoints},abortConnect=false,connectTimeout=2000,syncTimeout=2000,asyncTimeout=2000,allowAdmin={admin}");

    public void Dispose()
    {
        foreach (RedisServer node in _nodes)
        {
            node.Dispose();
        }
    }

    private void WaitUntilReady()
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using ConnectionMultiplexer probe = Connect(admin: true);
            bool ready = _nodes.All(node =>
            {
                string info = probe.GetServer(node.Endpoint).Execute("CLUSTER", "INFO").ToString();
                return info.Contains("cluster_state:ok", StringComparison.Ordinal);
            });
            if (ready)
            {
                return;
            }

            if (clock.Elapsed > TimeSpan.FromSeconds(20))
            {
                throw new InvalidOperationException("The cluster did not reach cluster_state:ok within 20 s.");
            }

            Thread.Sleep(200);
        }
    }
}
