namespace RateEngine;

/// <summary>Settings of a RateEngine partitioned limiter that are not per key. Copied when the limiter is created.</summary>
public sealed class PartitionedLimiterOptions
{
    /// <summary>
    /// The most keys held at once. When every slot is taken, a new key's request fails with a lease whose
    /// <c>REASON_PHRASE</c> says so (and whose <c>RETRY_AFTER</c> is the time until an idle sweep); active keys are never
    /// reset to make room. Before refusing, the table drops the idle keys of the new key's shard (1/64 of the table); idle
    /// keys elsewhere leave at their shard's sweep, so a full table may refuse new keys for up to
    /// <see cref="IdleEvictionInterval"/> while idle keys wait in other shards. Such refusals are as cheap as an ordinary rejection: the options resolver is not consulted
    /// for them. Must be greater than 0. Default 1,048,576.
    /// </summary>
    public int MaxPartitions { get; set; } = 1 << 20;

    /// <summary>
    /// How long one full idle-eviction pass takes. The table is swept one shard (1/64) at a time on the time provider's
    /// timer, so eviction never stops the world. Only keys whose state is indistinguishable from a fresh one (every
    /// permit back, nothing queued) are dropped. Must be greater than <see cref="TimeSpan.Zero"/>; any larger value is
    /// accepted, and a shard's share is rounded down to whole milliseconds within the timer's range, so values below
    /// 64 ms act as 64 ms and values above about 8.7 years (64 times the timer's 49.7-day limit) as that. Default 64 seconds.
    /// </summary>
    public TimeSpan IdleEvictionInterval { get; set; } = TimeSpan.FromSeconds(64);

    /// <summary>The clock of every key. Must not be null. Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>
    /// Opt-in per-core reservations for hot keys: a key that many threads hit at once (a per-tool or per-model limit, a
    /// popular tenant) then takes its permits from per-core blocks, as a single limiter with
    /// <see cref="PerCoreReservationOptions"/> does, with the same guarantee and the same costs. A key is promoted when it
    /// takes the larger share of the sampled traffic of its candidate slot (one of 64; one admission in
    /// <see cref="HotKeySampling"/> on each thread is sampled, at random): <see cref="HotKeyStreak"/> votes more than the
    /// other keys that share the slot, on two processors or more, and its limit is at least <see cref="MinHotKeyLimit"/>.
    /// So a few keys that every thread hits are promoted at once, and many keys of even traffic practically never are
    /// (blocks cost each admission a few more cache lines, and pay only where one key's state would otherwise move between
    /// cores on most admissions: with 1,000 evenly hot keys on 2 cores, all promoted, admissions took 4–45 % longer). A key
    /// whose requests all run on one core stays as it is. At most <see cref="MaxHotKeys"/> keys are hot at once; a hot key
    /// stays hot until it is evicted as idle, and is not hot when it comes back. A key that has had to queue
    /// (<c>AcquireAsync</c> with no permits free and room in the queue) is decided by a limiter of its own from then on, and
    /// is not promoted until it is evicted and comes back (a hot key that queues keeps its blocks). A hot key costs about
    /// <c>128 * cores + 150</c> bytes more. The fixed window, the sliding-window counter and the token bucket take it; the
    /// sliding-window log refuses blocks (<see cref="ArgumentException"/>). Null (the default), or a
    /// <see cref="PerCoreReservationOptions.MaxBlockSize"/> of 1: no key has blocks.
    /// </summary>
    public PerCoreReservationOptions? PerCoreReservation { get; set; }

    /// <summary>The most keys that have per-core blocks at once (see <see cref="PerCoreReservation"/>): 4,096.</summary>
    public const int MaxHotKeys = 4096;

    /// <summary>The smallest key limit worth per-core blocks (see <see cref="PerCoreReservation"/>): 1,024 permits.</summary>
    public const long MinHotKeyLimit = 1024;

    /// <summary>One admission in this many, on each thread and at random, is sampled to find hot keys (see <see cref="PerCoreReservation"/>): 256.</summary>
    public const int HotKeySampling = 256;

    /// <summary>
    /// The votes that promote a key (see <see cref="PerCoreReservation"/>): sampled admissions on it, less those on the other
    /// keys that share its candidate slot (one of 64), on two processors or more: 16.
    /// </summary>
    public const int HotKeyStreak = 16;
}
