using System.Net;
using System.Security.Claims;
using Microsoft.AspNetCore.Http;

namespace RateEngine.AspNetCore.Tests;

public sealed class HttpPartitionKeysTests
{
    [Theory]
    [InlineData("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64")]
    [InlineData("2001:db8:1:2::1", "2001:db8:1:2::/64")]
    [InlineData("::ffff:10.1.2.3", "10.1.2.3")]
    [InlineData("10.1.2.3", "10.1.2.3")]
    public void ClientIp_ByDefault_GroupsIPv6ByItsSlash64AndKeepsIPv4(string remote, string expected)
    {
        Assert.Equal(expected, HttpPartitionKeys.ClientIp(Context(remote)));
    }

    [Fact]
    public void ClientIp_Prefixes_AreConfigurable()
    {
        var options = new ClientIpOptions { IPv6PrefixLength = 48, IPv4PrefixLength = 24 };

        Assert.Equal("2001:db8:1::/48", HttpPartitionKeys.ClientIp(Context("2001:db8:1:2::1"), options));
        Assert.Equal("10.1.2.0/24", HttpPartitionKeys.ClientIp(Context("10.1.2.3"), options));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ClientIpOptions { IPv6PrefixLength = 129 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new ClientIpOptions { ForwardedHops = 0 });
    }

    [Fact]
    public void ClientIp_ForwardedHeaderNotConfigured_IgnoresIt()
    {
        HttpContext http = Context("10.0.0.1");
        http.Request.Headers["X-Forwarded-For"] = "203.0.113.9";

        Assert.Equal("10.0.0.1", HttpPartitionKeys.ClientIp(http));
    }

    [Fact]
    public void ClientIp_BehindTrustedProxies_TakesTheEntryTheyAppendedNotTheClientsOwn()
    {
        HttpContext http = Context("10.0.0.1");
        http.Request.Headers.Append("X-Forwarded-For", "1.2.3.4, 203.0.113.9"); // the client wrote 1.2.3.4 itself
        http.Request.Headers.Append("X-Forwarded-For", "198.51.100.7");

        Assert.Equal("198.51.100.7", HttpPartitionKeys.ClientIp(http, BehindProxy()));
        ClientIpOptions twoHops = BehindProxy();
        twoHops.ForwardedHops = 2;
        twoHops.TrustedProxies.Add(IPNetwork.Parse("198.51.100.0/24")); // the CDN in front of the load balancer
        Assert.Equal("203.0.113.9", HttpPartitionKeys.ClientIp(http, twoHops));
        ClientIpOptions fourHops = BehindProxy();
        fourHops.ForwardedHops = 4;
        fourHops.TrustedProxies.Add(IPNetwork.Parse("198.51.100.0/24"));
        Assert.Equal("203.0.113.9", HttpPartitionKeys.ClientIp(http, fourHops)); // the first untrusted entry is the client
    }

    [Fact]
    public void ClientIp_TwoHopsAndAClientThatSkipsTheFirstProxy_IsKeyedByItsOwnAddress()
    {
        // Client -> CDN -> load balancer -> app, two hops. An attacker that connects to the load balancer directly writes
        // an address of its choice; the load balancer appends the attacker's real one. Taking the entry two from the right
        // would let it pick a new key per request and dodge a per-IP cap.
        ClientIpOptions twoHops = BehindProxy();
        twoHops.ForwardedHops = 2;
        twoHops.TrustedProxies.Add(IPNetwork.Parse("198.51.100.0/24"));
        HttpContext http = Context("10.0.0.5");
        http.Request.Headers["X-Forwarded-For"] = "192.0.2.77, 203.0.113.50";

        Assert.Equal("203.0.113.50", HttpPartitionKeys.ClientIp(http, twoHops));
    }

    [Theory]
    [InlineData("198.51.100.20", "198.51.100.20")] // a client that reaches the app directly writes the header itself
    [InlineData("127.0.0.1", "203.0.113.9")] // loopback is trusted by default
    [InlineData("::ffff:10.0.0.1", "203.0.113.9")] // the proxy's network, over a dual-stack socket
    public void ClientIp_ForwardedHeader_IsBelievedOnlyFromATrustedProxy(string peer, string expected)
    {
        HttpContext http = Context(peer);
        http.Request.Headers["X-Forwarded-For"] = "203.0.113.9";

        Assert.Equal(expected, HttpPartitionKeys.ClientIp(http, BehindProxy()));
        Assert.Equal(peer == "127.0.0.1" ? expected : HttpPartitionKeys.ClientIp(Context(peer)), HttpPartitionKeys.ClientIp(http, new ClientIpOptions { ForwardedHeader = "X-Forwarded-For" }));
    }

    [Fact]
    public void ClientIp_ForwardedHeaderOnAConnectionWithoutAnAddress_IsBelieved()
    {
        // A proxy in front on a Unix socket (nginx to Kestrel): no IP peer, only a local process could connect.
        var http = new DefaultHttpContext();
        http.Request.Headers["X-Forwarded-For"] = "203.0.113.9";

        Assert.Equal("203.0.113.9", HttpPartitionKeys.ClientIp(http, BehindProxy()));
    }

    /// <summary>Behind a load balancer on 10.0.0.0/8 that appends to X-Forwarded-For.</summary>
    private static ClientIpOptions BehindProxy()
    {
        var options = new ClientIpOptions { ForwardedHeader = "X-Forwarded-For" };
        options.TrustedProxies.Add(IPNetwork.Parse("10.0.0.0/8"));
        return options;
    }

    [Fact]
    public void ClientIp_NoAddress_IsUnknown() => Assert.Equal("unknown", HttpPartitionKeys.ClientIp(new DefaultHttpContext()));

    [Theory]
    [InlineData("Authorization", "Bearer sk-123", "sk-123")]
    [InlineData("Authorization", "bearer  sk-123 ", "sk-123")]
    [InlineData("Authorization", "Basic dXNlcjpwYXNz", null)]
    [InlineData("X-Api-Key", "key-1", "key-1")]
    [InlineData("X-Api-Key", "  ", null)]
    public void ApiKey_FromItsHeader(string header, string value, string? expected)
    {
        var http = new DefaultHttpContext();
        http.Request.Headers[header] = value;

        Assert.Equal(expected, HttpPartitionKeys.ApiKey(http, header));
    }

    [Fact]
    public void User_AnonymousOrAuthenticated()
    {
        var http = new DefaultHttpContext();
        Assert.Null(HttpPartitionKeys.User(http));

        http.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, "user-7"), new Claim(ClaimTypes.Name, "Ann")], "test"));
        Assert.Equal("user-7", HttpPartitionKeys.User(http));
    }

    [Fact]
    public void Route_RequestThatMatchedNoRoute_SharesOneKeyWhateverItsPath()
    {
        // A path the client made up is not a key: each one would take an entry of the layer's table until it is full.
        var first = new DefaultHttpContext();
        first.Request.Path = "/made/up/1";
        var second = new DefaultHttpContext();
        second.Request.Path = "/made/up/2";

        Assert.Equal(HttpPartitionKeys.Unrouted, HttpPartitionKeys.Route(first));
        Assert.Equal(HttpPartitionKeys.Unrouted, HttpPartitionKeys.Route(second));
    }

    [Fact]
    public void Selectors_NullContext_Throw()
    {
        Assert.Throws<ArgumentNullException>(() => HttpPartitionKeys.ClientIp(null!));
        Assert.Throws<ArgumentNullException>(() => HttpPartitionKeys.ApiKey(null!));
        Assert.Throws<ArgumentNullException>(() => HttpPartitionKeys.Route(null!));
    }

    private static DefaultHttpContext Context(string remote)
    {
        var http = new DefaultHttpContext();
        http.Connection.RemoteIpAddress = IPAddress.Parse(remote);
        return http;
    }
}
