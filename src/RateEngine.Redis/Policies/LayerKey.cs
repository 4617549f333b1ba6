using RateEngine.Redis.Hybrid;

namespace RateEngine.Redis.Policies;

/// <summary>
/// One key of a layer served from local blocks (the hybrid mode): the cap its requests last saw (a tier's, so it can
/// change at run time) and the overruns its blocks could not cover, which its next reservation counts on Redis.
/// </summary>
internal sealed class LayerKey(string partitionKey, string layerKeyPrefix) : LocalKey(partitionKey)
{
    public override string RedisKey => layerKeyPrefix + PartitionKey;

    /// <summary>The cap in force at the latest request: reservations ask under it, and a block granted under a higher one is given back.</summary>
    public long Limit;

    /// <summary>Overruns spent here that no block covered: counted on Redis, past the cap if need be, by the next reservation.</summary>
    public long Debt;

    public override bool MayForget => Volatile.Read(ref Debt) == 0;

    public override long PayFromGrant(long granted)
    {
        // An overrun made while the reservation was on the wire is not in it. By CAS: one reservation is in flight per key,
        // but a charge may move a forgotten key's debt to its live state meanwhile (an exchange to 0), and a debt paid
        // after that would go negative, which no reservation could carry.
        while (true)
        {
            long owed = Volatile.Read(ref Debt);
            long paid = Math.Min(owed, granted);
            if (paid <= 0)
            {
                return 0;
            }

            if (Interlocked.CompareExchange(ref Debt, owed - paid, owed) == owed)
            {
                return paid;
            }
        }
    }
}
