namespace RateEngine.Redis.Policies;

/// <summary>
/// The version of one policy's tiers: odd while <see cref="RedisRatePolicy{TContext}.UpdateTiers"/> writes its layers,
/// even otherwise. A request reads its layers' limits between two equal even versions, so it is decided on one update
/// or another, never on a mix (layer a on the old tiers and layer b on the new, which neither version admits).
/// </summary>
internal sealed class TiersVersion
{
    private long _value;

    /// <summary>The version once no update is under way (a writer holds it odd for a few assignments).</summary>
    public long Stable()
    {
        SpinWait spin = default;
        while (true)
        {
            long value = Volatile.Read(ref _value);
            if ((value & 1) == 0)
            {
                return value;
            }

            spin.SpinOnce();
        }
    }

    /// <summary>The version now (odd while an update is under way).</summary>
    public long Current => Volatile.Read(ref _value);

    /// <summary>Brackets an update (called under the policy's update lock): odd between the two calls.</summary>
    public void Step() => Interlocked.Increment(ref _value);
}
