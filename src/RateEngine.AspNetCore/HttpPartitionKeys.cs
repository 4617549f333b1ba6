using System.Net;
using System.Net.Sockets;
using System.Security.Claims;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace RateEngine.AspNetCore;

/// <summary>
/// Partition keys from a request, for the layers' key selectors: the client's address (grouped by prefix), the
/// authenticated user, an API key, the route or a route value, and one constant key for global layers.
/// </summary>
/// <remarks>Keep a selector in a static field and pass the same instance to every layer of one key, so they share one key table.</remarks>
public static class HttpPartitionKeys
{
    /// <summary>The key every request shares, for a global layer keyed like the others.</summary>
    public const string Global = "*";

    /// <summary>
    /// The client's address as a key: the connection's remote address, or the trusted proxy's forwarded entry
    /// (<see cref="ClientIpOptions.ForwardedHeader"/>); IPv6 grouped by its prefix (for example <c>2001:db8:1:2::/64</c>).
    /// "unknown" when there is none (a test server or a Unix socket).
    /// </summary>
    /// <exception cref="ArgumentNullException">The context is null.</exception>
    public static string ClientIp(HttpContext context, ClientIpOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        IPAddress? address = context.Connection.RemoteIpAddress;
        if (options?.ForwardedHeader is { } header && IsTrustedProxy(address, options.TrustedProxies))
        {
            address = Forwarded(context.Request.Headers[header], options.ForwardedHops, options.TrustedProxies) ?? address;
        }

        return address is null ? "unknown" : Grouped(address, options ?? Defaults);
    }

    /// <summary>The authenticated user's identifier (its <c>NameIdentifier</c> claim, else its name); null when anonymous.</summary>
    /// <exception cref="ArgumentNullException">The context is null.</exception>
    public static string? User(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        ClaimsPrincipal user = context.User;
        return user.Identity?.IsAuthenticated == true ? user.FindFirstValue(ClaimTypes.NameIdentifier) ?? user.Identity.Name : null;
    }

    /// <summary>
    /// The API key the request presents in <paramref name="headerName"/>; for <c>Authorization</c>, the credentials of a
    /// <c>Bearer</c> scheme. Null when absent or blank. It is the credential itself: a key selector that uses it as a
    /// partition key puts the secret in the limiter's table and, on Redis, in the store's key names; map it to the account
    /// it names (or hash it) first where that matters.
    /// </summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    public static string? ApiKey(HttpContext context, string headerName = "X-Api-Key")
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(headerName);
        string? value = context.Request.Headers[headerName].FirstOrDefault()?.Trim();
        if (value is not null && string.Equals(headerName, "Authorization", StringComparison.OrdinalIgnoreCase))
        {
            const string Bearer = "Bearer ";
            value = value.StartsWith(Bearer, StringComparison.OrdinalIgnoreCase) ? value[Bearer.Length..].Trim() : null;
        }

        return string.IsNullOrEmpty(value) ? null : value;
    }

    /// <summary>
    /// The endpoint's route pattern (<c>/v1/tools/{tool}</c>); <see cref="Unrouted"/> for a request that matched no route
    /// (its path is the client's to choose: as a key, every made-up path would take a key of its own and fill the table).
    /// </summary>
    /// <exception cref="ArgumentNullException">The context is null.</exception>
    public static string Route(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? Unrouted;
    }

    /// <summary>The <see cref="Route"/> key every request that matched no route shares.</summary>
    public const string Unrouted = "(no route)";

    /// <summary>The route value <paramref name="name"/> (a tool name in <c>/v1/tools/{tool}</c>); null when absent.</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    public static string? RouteValue(HttpContext context, string name)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(name);
        return context.GetRouteValue(name)?.ToString();
    }

    private static readonly ClientIpOptions Defaults = new();

    private static bool IsTrustedProxy(IPAddress? peer, IList<IPNetwork> trusted)
    {
        if (peer is null)
        {
            return true; // a Unix socket or a named pipe: only a local process (the proxy in front) can connect
        }

        IPAddress plain = peer.IsIPv4MappedToIPv6 ? peer.MapToIPv4() : peer;
        foreach (IPNetwork network in trusted)
        {
            if (network.Contains(plain))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The client's entry: walking from the right, each entry is the address that connected to the proxy that appended
    /// it, and the first one that is not a trusted proxy is the client (whoever connected to a proxy may have written
    /// anything to its left: an attacker who reaches the second proxy directly must not pick its own key), at most
    /// <paramref name="hops"/> entries in. Null (the peer's address is used) when an entry cannot be read, or when every
    /// entry there is is a trusted proxy and there are fewer than <paramref name="hops"/>.
    /// </summary>
    private static IPAddress? Forwarded(Microsoft.Extensions.Primitives.StringValues values, int hops, IList<IPNetwork> trusted)
    {
        // Entries may come in several header lines; the proxies appended theirs on the right.
        string[] entries = [.. values.SelectMany(value => (value ?? string.Empty).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))];
        for (int fromRight = 1; fromRight <= hops && fromRight <= entries.Length; fromRight++)
        {
            string entry = entries[^fromRight];
            if (!IPAddress.TryParse(entry, out IPAddress? address) && !(IPEndPoint.TryParse(entry, out IPEndPoint? endPoint) && (address = endPoint.Address) is not null))
            {
                return null;
            }

            if (fromRight == hops || !IsTrustedProxy(address, trusted))
            {
                return address;
            }
        }

        return null;
    }

    private static string Grouped(IPAddress address, ClientIpOptions options)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        bool v4 = address.AddressFamily == AddressFamily.InterNetwork;
        int prefix = v4 ? options.IPv4PrefixLength : options.IPv6PrefixLength;
        int bits = v4 ? 32 : 128;
        if (prefix == bits)
        {
            return address.ToString();
        }

        byte[] bytes = address.GetAddressBytes();
        for (int bit = prefix; bit < bits; bit++)
        {
            bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        }

        return $"{new IPAddress(bytes)}/{prefix}";
    }
}
