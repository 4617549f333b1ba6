using RateEngine.Algorithms;

namespace RateEngine.Limiters;

/// <summary>
/// One shared token bucket whose tokens are handed out from per-core blocks (<see cref="PerCoreReservationOptions"/>):
/// a thread takes from its core's block with one CAS on a cache line no other core writes, and only a block that cannot
/// serve the request goes to the shared bucket, for the request plus a block of further tokens (a request larger than what
/// its block holds takes the block's usable tokens and the rest from the shared bucket; if the bucket refuses, the block
/// keeps its tokens).
/// </summary>
/// <remarks>
/// <para><b>Why a token may be used late</b>: the bucket (GCRA) gives every admitted token a slot of <c>cost</c> units in
/// tat, and tat only moves forward (this host never refunds), so slots never overlap. A token stamped t with slot
/// [a, a + cost) satisfies <c>t &lt;= a</c> and <c>a + cost &lt;= t + burst</c>; tokens stamped in [x, y] then have their slots
/// inside [x, y + burst), so there are at most <c>(y - x) / cost + burst / cost</c> of them: the bucket's invariant. The
/// bucket's own admissions meet both conditions at their stamp. A block of n tokens taken at u has the slots
/// [s + j * cost, s + (j + 1) * cost) with s = max(tat, u + lead) for some lead &gt;= 0 and s + n * cost &lt;= u + burst; token j used at t with
/// <c>u &lt;= t &lt;= s + j * cost</c> meets both (the second because s + (j + 1) * cost &lt;= u + burst &lt;= t + burst), whatever
/// was admitted in between. So a token is used only by its slot's start (its deadline); one whose deadline passed is
/// skipped and lost (the bucket counted it).</para>
/// <para><b>Block</b>: the stripe's word packs a generation (high 42 bits), a closed bit and the tokens remaining; its
/// fields (the taking admission's stamp, first slot and size) are written only while the word is closed, and a taker's
/// CAS on the open word fails if the block was replaced since it read them, so the fields it used were the block's.
/// Tokens are used in order: the next is <c>Size - remaining</c>, or the first after it whose deadline has not passed.</para>
/// <para><b>Lock-free</b>: a thread that finds its core's block closed (another thread refilling it) takes its tokens
/// from the shared bucket directly. A refused request takes from any other core's block before refusing.</para>
/// <para><b>Refunds</b> free nothing: the bucket itself undoes an admission only while nobody has moved tat since, which a
/// block's tokens, taken earlier, never meet.</para>
/// <para><b>Lead</b>: from a full bucket s would be u, and token j would last only j token intervals, so a core that
/// uses its block slower than the bucket refills (two cores sharing a fast bucket, each at half the pace) would lose
/// most of every block. A block's slots therefore start <c>lead</c> after u: twice the core's pace since its last block
/// times the block's extra tokens, so the core can use each of them by its slot; the slots between tat and u + lead are
/// left unused. They are tokens a full bucket would have dropped anyway, unless it is drawn down meanwhile: so a lead
/// costs nothing while the bucket stays near full. A lead is at most 1/64 of the burst: a core too slow for that gets
/// fewer extra tokens, and one too slow for even one (a core back from idle, whose pace is unknown) takes a block of one
/// from now, which measures its pace for the next. A drawn-down bucket (tat at least lead ahead) gives its slots from
/// tat and wastes nothing.</para>
/// <para><b>What it costs</b>: the bucket and the blocks together read at most about <c>TokenLimit / 64</c> tokens below
/// what the bucket alone would (the leads' unused slots: a new gap forms only while tat is less than a lead ahead, so
/// gaps never add up beyond the largest lead), until the bucket is next full; plus tokens a core does not use by their slot (a core
/// much slower than its last block's pace: its blocks then halve, down to none, and the core takes from the shared
/// bucket alone and tries a block every 64th refill). Near the cap a block takes at most <c>1 / (2 * cores)</c> of what
/// is left.</para>
/// </remarks>
internal sealed class PerCoreBucketHost : PerCoreHost
{
    // A block holds at most MaxBlockSizeLimit (2^20) tokens: 21 bits of remaining, a closed bit, and 42 bits of
    // generation, moved on every close of the word (refills the shared bucket refused included), so a taker stalled
    // across a wrap of the generation (2^42 closes of one core: days of back-to-back refused refills at the least)
    // is out of reach.
    private const long RemainingMask = (1L << 21) - 1;
    private const long ClosedBit = 1L << 21;
    private const int GenerationShift = 22;

    /// <summary>How often a core whose blocks shrank to nothing tries a block again (a power of two).</summary>
    private const long ProbeEvery = 64;

    /// <summary>The most of the burst a block's slots may start ahead of now (see remarks: lead): 1/64.</summary>
    private const long LeadShare = 64;

    private readonly TokenBucket _bucket;
    private readonly StateCell<long> _cell;
    private readonly long _maxLead;

    public PerCoreBucketHost(TokenBucket bucket, PerCoreReservationOptions options)
        : this(bucket, options, OwnedStateCell<long>.Create(bucket.CreateState()))
    {
    }

    /// <summary>Blocks over a bucket whose state lives elsewhere: a partition key's entry, promoted once it is hot.</summary>
    public PerCoreBucketHost(TokenBucket bucket, PerCoreReservationOptions options, StateCell<long> cell)
        : base(options)
    {
        _bucket = bucket;
        _cell = cell;
        _maxLead = bucket.PermitLimit * bucket.TokenCost / LeadShare;
    }

    public override long PermitLimit => _bucket.PermitLimit;

    public override long RefillTicks => _bucket.RefillTicks;

    public override bool TryAcquire(long now, long permits, out Admission admission, out long retryAfter)
    {
        int home = Home();
        if (TryTake(home, now, permits, out admission, out long seen))
        {
            retryAfter = 0;
            return true;
        }

        return Refill(home, seen, now, permits, out admission, out retryAfter);
    }

    /// <summary>Frees nothing (see remarks): the tokens stay spent.</summary>
    public override bool Refund(in Admission admission, long now) => false;

    /// <remarks>The blocks first, then the bucket, for the reason <see cref="StripedHost{TAlgorithm,TState}.GetAvailablePermits"/> gives.</remarks>
    public override long GetAvailablePermits(long now)
    {
        long held = HeldInBlocks(now);
        return Math.Min(_bucket.PermitLimit, held + _bucket.GetAvailablePermits(ref _cell.State, now));
    }

    /// <summary>The tokens every block still holds that are not past their slots at <paramref name="now"/>.</summary>
    internal long HeldInBlocks(long now)
    {
        long held = 0;
        foreach (ref BlockStripe stripe in Stripes.AsSpan())
        {
            held += Usable(ref stripe, now);
        }

        return held;
    }

    public override long GetRetryAfter(long now, long permits)
    {
        long shared = _bucket.GetRetryAfter(ref _cell.State, now, permits);
        if (shared == 0)
        {
            return 0;
        }

        foreach (ref BlockStripe stripe in Stripes.AsSpan())
        {
            if (Usable(ref stripe, now) >= permits)
            {
                return 0;
            }
        }

        return shared;
    }

    /// <summary>The shared bucket's: once it is full, every block's deadlines have passed (they lie before tat).</summary>
    public override long? GetFullSince(long now) => _bucket.GetFullSince(ref _cell.State, now);

    /// <summary>
    /// Takes <paramref name="permits"/> tokens from stripe <paramref name="index"/>'s block: the first ones not past their
    /// slot (tokens whose slot passed are skipped, and lost). <paramref name="seen"/> is the word it last read.
    /// </summary>
    private bool TryTake(int index, long now, long permits, out Admission admission, out long seen)
    {
        ref BlockStripe stripe = ref Stripes[index];
        while (true)
        {
            long word = seen = Volatile.Read(ref stripe.Word);
            long remaining = word & RemainingMask;
            if ((word & ClosedBit) != 0 || remaining < permits)
            {
                admission = default;
                return false;
            }

            long stamp = stripe.Stamp;
            long size = stripe.Size;
            long first = Math.Max(size - remaining, FirstUsable(stripe.FirstSlot, _bucket.UnitsSince(stamp, now)));
            if (size - first < permits)
            {
                admission = default;
                return false;
            }

            // Linearization point: the block is the one whose fields were read, with these tokens left; a later token's
            // slot is later, so the first one taken has the earliest.
            if (Interlocked.CompareExchange(ref stripe.Word, word - remaining + (size - first - permits), word) == word)
            {
                admission = new Admission(Math.Max(_bucket.StampAt(now), stamp), permits, Marker: 0, Previous: index);
                return true;
            }
        }
    }

    /// <summary>The first token j whose slot has not passed <paramref name="elapsed"/> units after the block's stamp: elapsed &lt;= firstSlot + j * cost.</summary>
    private long FirstUsable(long firstSlot, long elapsed) =>
        elapsed <= firstSlot ? 0 : ((elapsed - firstSlot - 1) / _bucket.TokenCost) + 1;

    /// <summary>
    /// The home block could not serve: close it, take the request plus a block from the shared bucket and open the new
    /// block; if another thread is refilling it, take the request alone; if the bucket is out, take from another core.
    /// </summary>
    private bool Refill(int home, long seen, long now, long permits, out Admission admission, out long retryAfter)
    {
        ref BlockStripe stripe = ref Stripes[home];
        long last = stripe.LastExtra;

        // A core without a block (its first refill, or blocks that kept expiring unused shrank to nothing) takes from the
        // shared bucket alone, as without blocks, and tries a block at its first refill and then every 64th.
        bool probe = last > 0 || (++stripe.Skips & (ProbeEvery - 1)) == 1;
        long generation = (seen >> GenerationShift) + 1;

        // Closes only the block the take refused: one another thread has just published is used, not replaced.
        bool owner = probe && (seen & ClosedBit) == 0
            && Interlocked.CompareExchange(ref stripe.Word, (generation << GenerationShift) | ClosedBit, seen) == seen;
        if (!owner && probe && Volatile.Read(ref stripe.Word) != seen && TryTake(home, now, permits, out admission, out _))
        {
            retryAfter = 0;
            return true;
        }

        long extra = 0;
        bool taken = false;
        bool blockOnly = false;
        Admission block = default;
        retryAfter = 0;

        // The closed block's tokens still usable (too few for the request, or the take would have served it) go to the
        // request with the rest from the shared bucket, rather than being dropped with the block; at least one token comes
        // from the bucket, whose admission stamps the request.
        long own = permits;
        try
        {
            if (owner)
            {
                own = permits - Math.Min(permits - 1, UsableOf(ref stripe, seen, now));
                long next = Math.Min((seen & RemainingMask) < permits ? Math.Max(last * 2, 1) : last / 2, MaxExtra);
                stripe.LastExtra = next;
                long available = _bucket.GetAvailablePermits(ref _cell.State, now);
                extra = available > own ? Math.Min(Math.Min(next, (available - own) / (2L * Stripes.Length)), _bucket.PermitLimit - own) : 0;
            }

            long lead = extra > 0 ? Lead(ref stripe, now, ref extra) : 0;
            taken = (lead > 0 && _bucket.TryAcquireAhead(ref _cell.State, now, own + extra, lead, out block, out retryAfter))
                || _bucket.TryAcquire(ref _cell.State, now, own + extra, out block, out retryAfter)
                || (extra > 0 && _bucket.TryAcquire(ref _cell.State, now, own + (extra = 0), out block, out retryAfter));

            // The bucket may decide at a later clock read than now (a caller whose read is stale by more than the bucket's
            // room): the old block's tokens are then used at that later stamp, and must not be past their slots there. If
            // they are, the request does not use them: it takes its whole count from the bucket's tokens if they are
            // enough (the first ones, at their admission's stamp, as any request's own), and the rest go to the new block;
            // if they are not, they all go to the new block and the request is decided from the blocks below.
            if (owner && taken && own < permits && UsableOf(ref stripe, seen, block.Stamp) < permits - own)
            {
                long given = own + extra;
                blockOnly = given < permits;

                // The block's word holds 21 bits of tokens: what a larger request gave beyond them is given up (stricter).
                extra = Math.Min(blockOnly ? given : given - permits, RemainingMask);
            }

            if (owner && taken && extra > 0)
            {
                stripe.Stamp = block.Stamp;
                stripe.FirstSlot = _bucket.FirstSlotAfterStamp(block);
                stripe.Size = block.Permits;
                stripe.SkipsAtBlock = stripe.Skips;
            }
        }
        finally
        {
            if (owner)
            {
                // Publishes the fields with the open word (a release): a taker that reads this word sees them. In a
                // finally, so that a clock that throws cannot leave the core's block closed for good. A refused request
                // reopens the old block as it was (its fields were not touched): its tokens are not lost.
                Volatile.Write(ref stripe.Word, (generation << GenerationShift) | (taken ? extra : seen & RemainingMask));
            }
        }

        if (taken && !blockOnly)
        {
            admission = new Admission(block.Stamp, permits, Marker: 0, Previous: home);
            return true;
        }

        // The shared bucket is out: tokens may still sit in a block, this core's too if another thread just refilled it.
        for (int i = 0; i < Stripes.Length; i++)
        {
            if (TryTake(After(home, i), now, permits, out admission, out _))
            {
                retryAfter = 0;
                return true;
            }
        }

        // The wait for the request's whole count from the bucket: the old block's tokens it counted on may expire meanwhile.
        if (own < permits) // a block-only request among them
        {
            retryAfter = Math.Max(1, _bucket.GetRetryAfter(ref _cell.State, now, permits));
        }

        admission = default;
        return false;
    }

    /// <summary>
    /// How far after now (in units) the slots of a block should start so that the core can use its
    /// <paramref name="extra"/> tokens by their slots (the request's own are used now): twice the core's pace since its
    /// last block (units per token or request it took since) times the extra tokens. A lead is at most
    /// <see cref="LeadShare"/> of the burst, so a core too slow for that gets fewer extra tokens; one too slow for even one
    /// (a core back from idle, whose pace is unknown) gets a block of one extra token taken from now, which measures its
    /// pace afresh for the next. 0 before the core's first block.
    /// </summary>
    private long Lead(ref BlockStripe stripe, long now, ref long extra)
    {
        // Since its last block the core used that block and, if its blocks had shrunk to none, one request or more per
        // refill without a block (each counted in Skips).
        long lastSize = stripe.Size;
        if (lastSize == 0)
        {
            return 0;
        }

        Int128 used = (Int128)lastSize + Math.Max(0, stripe.Skips - stripe.SkipsAtBlock);
        Int128 twicePace = (Int128)_bucket.UnitsSince(stripe.Stamp, now) * 2;
        if (twicePace == 0)
        {
            return 0;
        }

        Int128 fits = _maxLead * used / twicePace;
        if (fits == 0)
        {
            extra = 1;
            return 0;
        }

        extra = (long)Int128.Min(extra, fits);
        return (long)(twicePace * extra / used);
    }

    /// <summary>
    /// The tokens of the block that <paramref name="word"/> names that are not past their slots at <paramref name="now"/>,
    /// from the stripe's fields: exact for a block this thread closed (its fields stay until it reopens it); other readers
    /// check the word again after (<see cref="Usable"/>).
    /// </summary>
    private long UsableOf(ref BlockStripe stripe, long word, long now)
    {
        long remaining = word & RemainingMask;
        if (remaining == 0)
        {
            return 0;
        }

        long size = stripe.Size;
        return Math.Max(0, size - Math.Max(size - remaining, FirstUsable(stripe.FirstSlot, _bucket.UnitsSince(stripe.Stamp, now))));
    }

    /// <summary>Tokens of the block that are not past their deadline at <paramref name="now"/> (for statistics).</summary>
    private long Usable(ref BlockStripe stripe, long now)
    {
        long word = Volatile.Read(ref stripe.Word);
        if ((word & ClosedBit) != 0)
        {
            return 0;
        }

        long usable = UsableOf(ref stripe, word, now);

        // The fields' reads must be done before the word is read again (plain reads may move past a volatile one).
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref stripe.Word) == word ? usable : 0;
    }
}
