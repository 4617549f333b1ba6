namespace RateEngine.Redis.Hybrid;

/// <summary>
/// A reservation script's answer: <paramref name="Granted"/> permits (0: refused, retry after <paramref name="RetryAfter"/>
/// µs), usable for <paramref name="ValidFor"/> µs, counted in <paramref name="Period"/>; a layered policy's script also says
/// what the key's usage is after the grant, for response headers, and the cap it was granted under.
/// </summary>
internal readonly record struct Reservation(long Granted, long RetryAfter, long ValidFor, long Period, long Used = 0, long Limit = 0);
