using System.Net;

namespace RateEngine.AspNetCore;

/// <summary>How <see cref="HttpPartitionKeys.ClientIp(Microsoft.AspNetCore.Http.HttpContext, ClientIpOptions?)"/> finds and groups a client's address.</summary>
public sealed class ClientIpOptions
{
    private int _forwardedHops = 1;
    private int _ipv6PrefixLength = 64;
    private int _ipv4PrefixLength = 32;

    /// <summary>
    /// The header a trusted reverse proxy appends the client's address to (<c>X-Forwarded-For</c>), or null to use the
    /// connection's remote address. Set it only behind such a proxy: anyone can send the header, so it is read only on
    /// connections from <see cref="TrustedProxies"/>. Do not combine it with ASP.NET Core's forwarded-headers middleware
    /// (<c>UseForwardedHeaders</c>), which takes the proxies' entries off the header and puts the client's address in the
    /// connection: leave this null then. Default null.
    /// </summary>
    public string? ForwardedHeader { get; set; }

    /// <summary>
    /// The networks of the proxies whose <see cref="ForwardedHeader"/> is believed: on a connection from any other address
    /// (a client that reaches the app directly) the header is ignored and the connection's address is the key. A connection
    /// without an IP address (a Unix socket, a named pipe: a local proxy) is believed too. Default: loopback only
    /// (<c>127.0.0.0/8</c> and <c>::1/128</c>), as ASP.NET Core's forwarded-headers middleware; add your load balancer's
    /// network.
    /// </summary>
    public IList<IPNetwork> TrustedProxies { get; } = [IPNetwork.Parse("127.0.0.0/8"), IPNetwork.Parse("::1/128")];

    /// <summary>
    /// How many trusted proxies append to <see cref="ForwardedHeader"/>: the client is the address that many entries from
    /// the right, or the first entry from the right that is not in <see cref="TrustedProxies"/> if one comes sooner (it
    /// connected to a proxy directly, and entries further left are its own to write). List every proxy's network in
    /// <see cref="TrustedProxies"/>, not only the last one's. Default 1.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Less than 1.</exception>
    public int ForwardedHops
    {
        get => _forwardedHops;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _forwardedHops = value;
        }
    }

    /// <summary>
    /// IPv6 addresses are grouped by this prefix: one customer usually holds a whole /64, so a per-address key would let
    /// them rotate addresses past the limit. Some hold more (a tunnel broker hands out routed /48s, 65,536 /64s each):
    /// where that matters, add a second per-IP layer keyed with a /48 and a higher limit. Default 64.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..128.</exception>
    public int IPv6PrefixLength
    {
        get => _ipv6PrefixLength;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 128);
            _ipv6PrefixLength = value;
        }
    }

    /// <summary>IPv4 addresses (and IPv4-mapped IPv6 ones) are grouped by this prefix. Default 32 (one key per address).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 1..32.</exception>
    public int IPv4PrefixLength
    {
        get => _ipv4PrefixLength;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 32);
            _ipv4PrefixLength = value;
        }
    }
}
