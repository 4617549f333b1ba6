using System.Threading.RateLimiting;
using RateEngine.Algorithms;
using RateEngine.Limiters;
using RateEngine.Timing;

namespace RateEngine.Partitioning;

/// <summary>
/// A <see cref="PartitionedRateLimiter{TResource}"/> that keeps compact algorithm state per key in a
/// <see cref="PartitionTable{TKey,TEntry}"/>, not a limiter object per key.
/// </summary>
/// <remarks>
/// <para><b>Hot path</b>: select the key, find its entry without a lock, read the clock (a new key's entry is made, and
/// the clock read, under its shard's lock), run the algorithm's CAS on the entry's state, then re-read the entry's link. That last read pairs with eviction (below): an admission that lands
/// in an entry being evicted is discarded and decided again on the key's live entry.</para>
/// <para><b>Eviction</b> (one shard per timer tick, under that shard's lock) removes a key only when its state is
/// indistinguishable from a fresh one: mark the entry evicted (CAS on its link), then re-check the state. Either the
/// re-check sees a racing admission (the eviction is undone) or the admitting thread sees the mark (its admission is
/// discarded): both sides use full fences, so at least one sees the other. The clock is read after the entry is
/// found (for a new key, when its entry is made, under the shard's lock), so a re-created key never decides at a time
/// before its predecessor was judged idle.</para>
/// <para><b>Waiting</b>: a key that must queue gets a <see cref="PartitionKeyLimiter"/> on the same state, which
/// brings the whole queue contract; keys that never wait never pay for it.</para>
/// <para><b>Hot keys</b> (opt-in, <see cref="PartitionedLimiterOptions.PerCoreReservation"/>): a key that sampled admissions
/// find hot (<see cref="HotKeyCandidates"/>) is promoted to a <see cref="PartitionHotKey"/>, whose per-core blocks are taken
/// from the entry's state. Eviction is
/// unchanged: an entry is idle only once its state is fresh, and then every block's period (or token slot) is over, so no
/// block holds a permit that could still be used; an admission from a block of an entry being evicted is discarded and
/// decided again, as any other.</para>
/// </remarks>
internal sealed partial class EnginePartitionedLimiter<TResource, TKey, TAlgorithm, TState> : PartitionedRateLimiter<TResource>, IPartitionDiagnostics
    where TKey : notnull
    where TAlgorithm : struct, IRateAlgorithm<TState>
{
    /// <summary>What <c>FindOrCreate</c> reports when it made no entry, so read no clock: never a reading (they start at 0).</summary>
    private const long NotCreated = long.MinValue;

    private static readonly PartitionEntry<TState> Tombstone = new();

    private readonly Func<TResource, TKey> _keySelector;
    private readonly Func<TKey, PartitionTier<TAlgorithm, TState>> _tierOf;
    private readonly PartitionTable<TKey, PartitionEntry<TState>> _table;
    private readonly LimiterClock _clock;
    private readonly LeaseCounters _counters = new();
    private readonly ITimer _sweeper;
    private readonly TimeSpan _sweepPeriod;
    private readonly Action<int> _makeRoom;
    private readonly Func<TKey, PartitionEntry<TState>, bool> _evictIfIdle;
    private readonly long[] _roomSweptAt;
    private readonly RateEngineLease _partitionsFull;
    private readonly RateEngineLease _tooManyCollisions;
    private readonly HotKeyCandidates? _hotKeys;
    private int _nextShard;
    private long _sweepTicks;
    private int _keyLimitersInstalled;
    private volatile bool _disposed;

    public EnginePartitionedLimiter(
        Func<TResource, TKey> keySelector,
        Func<TKey, PartitionTier<TAlgorithm, TState>> tierOf,
        PartitionedLimiterOptions options,
        IEqualityComparer<TKey> comparer)
    {
        _keySelector = keySelector;
        _tierOf = tierOf;
        _clock = new LimiterClock(options.TimeProvider);
        _table = new PartitionTable<TKey, PartitionEntry<TState>>(comparer, Tombstone, options.MaxPartitions);
        _evictIfIdle = EvictIfIdle;
        _makeRoom = MakeRoom;
        _roomSweptAt = new long[_table.ShardCount];
        _sweepPeriod = SweepPeriod(options.IdleEvictionInterval, _table.ShardCount);
        _partitionsFull = RateEngineLease.Rejected(_sweepPeriod, ReasonPhrases.PartitionsFull);
        _tooManyCollisions = RateEngineLease.Rejected(_sweepPeriod, ReasonPhrases.TooManyCollisions);
        _hotKeys = options.PerCoreReservation is { MaxBlockSize: > 1 } perCore ? new HotKeyCandidates(perCore.HotKeySampling, perCore.HotKeyStreak, perCore.ChooseStripe) : null;
        _sweeper = ContextFreeTimer.Create(
            options.TimeProvider,
            static state => ((EnginePartitionedLimiter<TResource, TKey, TAlgorithm, TState>)state!).SweepNextShard(),
            this,
            _sweepPeriod,
            _sweepPeriod);
    }

    /// <summary>The clock every key's state is measured on.</summary>
    internal LimiterClock Clock => _clock;

    public long PartitionCount => _table.Count;

    public int HotKeyCount => _hotKeys?.Count ?? 0;

    public long Now() => _clock.Now();

    public Action<object, Admission>? AdmissionObserver { get; set; }

    public TimeSpan? GetIdleDuration(object key)
    {
        PartitionEntry<TState>? entry = _table.Find((TKey)key);
        long now = _clock.Now();
        long? fullSince = 0;
        switch (entry is null ? null : Volatile.Read(ref entry.Link))
        {
            case PartitionTier<TAlgorithm, TState> tier:
                fullSince = tier.Algorithm.GetFullSince(ref entry!.State, now);
                break;
            case PartitionHotKey hot:
                fullSince = hot.Host.GetFullSince(now);
                break;
            case PartitionKeyLimiter limiter:
                return limiter.IdleDuration;
        }

        return fullSince is { } since ? _clock.Elapsed(_clock.ToTimestamp(since), _clock.Timestamp()) : null;
    }

    public bool Promote(object key)
    {
        if (_hotKeys is null || FindOrCreate((TKey)key, 0, out _, out long createdAt) is not { } entry
            || Volatile.Read(ref entry.Link) is not PartitionTier<TAlgorithm, TState> { HotHost: not null } tier)
        {
            return false;
        }

        TryPromote(entry, tier, createdAt == NotCreated ? _clock.Now() : createdAt);
        return Volatile.Read(ref entry.Link) is PartitionHotKey;
    }

    public override RateLimiterStatistics? GetStatistics(TResource resource)
    {
        ThrowIfDisposed();
        TKey key = SelectKey(resource);
        PartitionEntry<TState>? entry = _table.Find(key);
        object? link = entry is null ? null : Volatile.Read(ref entry.Link);
        long available = link switch
        {
            PartitionTier<TAlgorithm, TState> tier => tier.Algorithm.GetAvailablePermits(ref entry!.State, _clock.Now()),
            PartitionHotKey hot => hot.Host.GetAvailablePermits(_clock.Now()),
            PartitionKeyLimiter limiter => limiter.Host.GetAvailablePermits(_clock.Now()),
            _ => _tierOf(key).Algorithm.PermitLimit, // not held (never seen, or evicted as idle): all permits are free
        };
        return _counters.Statistics(available, (link as PartitionKeyLimiter)?.QueuedPermits ?? 0);
    }

    protected override RateLimitLease AttemptAcquireCore(TResource resource, int permitCount)
    {
        TKey key = ArrivingKey(resource, permitCount);
        SpinWait spin = default;
        while (true)
        {
            PartitionEntry<TState>? entry = FindOrCreate(key, permitCount, out RateEngineLease? refusal, out long createdAt);
            if (entry is null)
            {
                return Refuse(refusal!);
            }

            // The clock first, with the entry's line requested but not read: the read of a precise clock waits for every
            // earlier load, and a hot key's line is often the other core's (CacheLine.Prefetch). A request that made a new
            // key's entry decides at the reading the entry was made with (NewEntry).
            CacheLine.Prefetch(ref entry.State);
            long now = createdAt == NotCreated ? _clock.Now() : createdAt;
            object link = Volatile.Read(ref entry.Link);
            if (link is PartitionKeyLimiter keyLimiter)
            {
                // Any answer the key's limiter gave on a dead entry is decided again on the live one: an admission (its
                // count is not the key's), a refusal (it may count admissions discarded and decided again there) and a
                // probe alike. The key's limiter counted it, so the count is taken back.
                RateLimitLease lease = keyLimiter.AttemptAcquire(permitCount);
                if (AdmissionLost(key, entry))
                {
                    _counters.Withdraw(lease.IsAcquired);
                    continue;
                }

                return lease;
            }

            var hot = link as PartitionHotKey;
            if ((hot?.Tier ?? link) is not PartitionTier<TAlgorithm, TState> tier)
            {
                spin.SpinOnce(); // evicted: the shard's lock holder is removing it right now
                continue;
            }

            tier.CheckPermitCount(permitCount);
            if (permitCount == 0)
            {
                // A dead entry's count is not the key's (it lacks what the live entry admitted): ask the live one.
                long available = hot is null ? tier.Algorithm.GetAvailablePermits(ref entry.State, now) : hot.Host.GetAvailablePermits(now);
                if (AdmissionLost(key, entry))
                {
                    continue;
                }

                return available > 0
                    ? ProbeAdmitted()
                    : ProbeRefused(hot is null ? tier.Algorithm.GetRetryAfter(ref entry.State, now, 1) : hot.Host.GetRetryAfter(now, 1));
            }

            long retryAfter;
            TierOutcome outcome = hot is null
                ? AdmitOnTier(key, entry, tier, permitCount, now, out retryAfter)
                : AdmitHot(key, entry, hot.Host, permitCount, now, out retryAfter);
            switch (outcome)
            {
                case TierOutcome.Admitted:
                    return RateEngineLease.Acquired;
                case TierOutcome.Lost:
                    continue;
                default:
                    _counters.Failed();
                    return RateEngineLease.Rejected(_clock.ToRetryAfter(retryAfter), ReasonPhrases.LimitReached);
            }
        }
    }

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(TResource resource, int permitCount, CancellationToken cancellationToken)
    {
        TKey key = ArrivingKey(resource, permitCount);
        SpinWait spin = default;
        while (true)
        {
            PartitionEntry<TState>? entry = FindOrCreate(key, permitCount, out RateEngineLease? refusal, out long createdAt);
            if (entry is null)
            {
                return new ValueTask<RateLimitLease>(Refuse(refusal!));
            }

            CacheLine.Prefetch(ref entry.State); // as in AttemptAcquireCore
            long now = createdAt == NotCreated ? _clock.Now() : createdAt;
            object link = Volatile.Read(ref entry.Link);
            if (link is PartitionTier<TAlgorithm, TState> or PartitionHotKey)
            {
                var hot = link as PartitionHotKey;
                var tier = (PartitionTier<TAlgorithm, TState>)(hot?.Tier ?? link);
                tier.CheckPermitCount(permitCount);
                TierOutcome outcome = (permitCount > 0, hot) switch
                {
                    (true, null) => AdmitOnTier(key, entry, tier, permitCount, now, out _),
                    (true, _) => AdmitHot(key, entry, hot.Host, permitCount, now, out _),
                    (false, null) => tier.Algorithm.GetAvailablePermits(ref entry.State, now) > 0 ? TierOutcome.Admitted : TierOutcome.Refused,
                    (false, _) => hot.Host.GetAvailablePermits(now) > 0 ? TierOutcome.Admitted : TierOutcome.Refused,
                };
                if (permitCount == 0 && AdmissionLost(key, entry))
                {
                    outcome = TierOutcome.Lost; // a probe read a dead entry: ask the live one (see AttemptAcquireCore)
                }
                if (outcome == TierOutcome.Lost)
                {
                    continue;
                }

                if (outcome == TierOutcome.Admitted)
                {
                    if (permitCount == 0)
                    {
                        _counters.Succeeded(); // the probe; AdmitOnTier counts its own admissions
                    }

                    return new ValueTask<RateLimitLease>(RateEngineLease.Acquired);
                }

                if (permitCount > tier.Queue.QueueLimit)
                {
                    // Nothing could ever queue: fail without building a queue for the key.
                    _counters.Failed();
                    long retryAfter = hot is null ? tier.Algorithm.GetRetryAfter(ref entry.State, now, permitCount) : hot.Host.GetRetryAfter(now, permitCount);
                    return new ValueTask<RateLimitLease>(RateEngineLease.Rejected(_clock.ToRetryAfter(retryAfter), ReasonPhrases.QueueFull));
                }

                // A hot key queues on its blocks: the key limiter's admissions and refunds are the blocks' own.
                AlgorithmHost keyHost = hot is null ? new AlgorithmHost<TAlgorithm, TState>(tier.Algorithm, entry) : hot.Host;
                var created = new PartitionKeyLimiter(new LimiterParts(keyHost, _clock, tier.Queue, _counters), link);
                if (AdmissionObserver is { } observer)
                {
                    created.AdmissionObserver = ObserveKey(observer, key);
                }

                if (Interlocked.CompareExchange(ref entry.Link, created, link) == link)
                {
                    Interlocked.Increment(ref _keyLimitersInstalled); // before the _disposed check below (see Dispose)
                    link = created;
                }
                else
                {
                    link = Volatile.Read(ref entry.Link);
                    created.Dispose();
                }
            }

            if (link is not PartitionKeyLimiter keyLimiter)
            {
                spin.SpinOnce();
                continue;
            }

            ValueTask<RateLimitLease> pending = keyLimiter.AcquireAsync(permitCount, cancellationToken);
            if (pending.IsCompletedSuccessfully)
            {
                RateLimitLease lease = pending.Result;
                if (ReferenceEquals(lease, PartitionKeyLimiter.Retired))
                {
                    spin.SpinOnce(); // the key is being evicted: look it up again
                    continue;
                }

                if (AdmissionLost(key, entry))
                {
                    _counters.Withdraw(lease.IsAcquired); // decided on a dead entry: decided again (see AttemptAcquireCore)
                    continue;
                }
            }

            // A Dispose that scanned the table before this key limiter existed must still fail its waiters.
            if (_disposed)
            {
                keyLimiter.Dispose();
            }

            return pending;
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (!disposing || _disposed)
        {
            return;
        }

        _disposed = true;
        _sweeper.Dispose();

        // Only keys that had to wait have a key limiter to dispose; a table of a million keys that never queued is not
        // walked. The fence pairs with the installer's increment-then-check: either this reads its increment and walks
        // the table, or it sees _disposed and disposes its key limiter itself.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _keyLimitersInstalled) == 0)
        {
            return;
        }

        foreach (PartitionEntry<TState> entry in _table.Entries())
        {
            (Volatile.Read(ref entry.Link) as PartitionKeyLimiter)?.Dispose();
        }
    }

    protected override ValueTask DisposeAsyncCore()
    {
        Dispose(true);
        return default;
    }

    /// <summary>
    /// The key's entry; a new key's request is checked against its tier's limit before an entry is made for it. Null
    /// when the table refuses the key, with the lease that says why in <paramref name="refusal"/>.
    /// </summary>
    /// <remarks>
    /// The flood of new keys against a full table is an attack's normal state, so it is refused before the options
    /// resolver runs and without the shard's lock, once the shard has swept itself this sweep tick (a request for more
    /// permits than the key's limit then also gets this refusal, not the exception, since its limit is never looked up).
    /// So is a flood of keys of a hash code that as many live keys as may share one already have (chosen to collide).
    /// </remarks>
    private PartitionEntry<TState>? FindOrCreate(TKey key, int permitCount, out RateEngineLease? refusal, out long createdAt)
    {
        uint hash = _table.Hash(key);
        PartitionEntry<TState>? entry = _table.Find(key, hash);
        refusal = null;
        createdAt = NotCreated;
        if (entry is not null)
        {
            return entry;
        }

        bool full = _table.IsFullFor(hash);
        if ((full || _table.IsCrowded(key, hash, out entry)) && !RoomSweepDue(_table.ShardOf(hash)))
        {
            refusal = full ? _partitionsFull : _tooManyCollisions;
            return null;
        }

        if (entry is not null)
        {
            return entry; // inserted by another request since the lookup above
        }

        PartitionTier<TAlgorithm, TState> tier = _tierOf(key);
        tier.CheckPermitCount(permitCount);
        var factory = new NewEntry(_clock, tier);
        entry = _table.GetOrAdd(key, hash, ref factory, _makeRoom, out AddRefusal why);
        createdAt = entry is not null && ReferenceEquals(entry, factory.Made) ? factory.CreatedAt : NotCreated;
        if (entry is null)
        {
            refusal = why == AddRefusal.TooManyCollisions ? _tooManyCollisions : _partitionsFull;
        }

        return entry;
    }

    /// <summary>
    /// The observer for one key's limiter. Its own method: a lambda in AcquireAsyncCore that captured the key would make
    /// the compiler allocate the capture on every call, taken or not.
    /// </summary>
    private static Action<Admission> ObserveKey(Action<object, Admission> observer, TKey key) =>
        admission => observer(key, admission);

    /// <summary>
    /// Makes a new key's entry, counting from the current window (see <see cref="IRateAlgorithm{TState}.CreateState(long)"/>),
    /// and keeps that clock reading for the request's decision: one read instead of two on a new key. It is taken under
    /// the shard's lock once the key is known to be missing, so no earlier entry of the key can be made, used and evicted
    /// after it: the request never decides at a time before a predecessor was judged idle. Only the call that adds the key
    /// runs <see cref="Create"/>; a request that finds a racing one's entry reads the clock itself.
    /// </summary>
    private struct NewEntry(LimiterClock clock, PartitionTier<TAlgorithm, TState> tier) : IEntryFactory<TKey, PartitionEntry<TState>>
    {
        /// <summary>The entry this maker made, if it ran: the reading below belongs to that entry only.</summary>
        public PartitionEntry<TState>? Made;

        public long CreatedAt;

        public PartitionEntry<TState> Create(TKey key)
        {
            CreatedAt = clock.Now();
            return Made = new() { State = tier.Algorithm.CreateState(CreatedAt), Link = tier };
        }
    }

    /// <summary>
    /// The lock-free admission on a key's own state: counted and observed when it stands; <see cref="TierOutcome.Lost"/>
    /// when an eviction removed the entry meanwhile (the caller decides again on the key's live entry).
    /// </summary>
    private TierOutcome AdmitOnTier(
        TKey key, PartitionEntry<TState> entry, PartitionTier<TAlgorithm, TState> tier, int permitCount, long now, out long retryAfter)
    {
        if (!tier.Algorithm.TryAcquire(ref entry.State, now, permitCount, out Admission admission, out retryAfter))
        {
            // A dead entry may count admissions that were discarded and decided again on the key's live entry: a refusal
            // it decided is decided again there too.
            return AdmissionLost(key, entry) ? TierOutcome.Lost : TierOutcome.Refused;
        }

        if (AdmissionLost(key, entry))
        {
            return TierOutcome.Lost;
        }

        _counters.Succeeded();
        AdmissionObserver?.Invoke(key, admission);
        if (tier.HotHost is not null && _hotKeys!.Sampled() && _hotKeys.Contended(entry))
        {
            TryPromote(entry, tier, now);
        }

        return TierOutcome.Admitted;
    }

    /// <summary>The admission of a hot key: from this core's block, else a refill from the entry's state, else another core's block.</summary>
    private TierOutcome AdmitHot(TKey key, PartitionEntry<TState> entry, PerCoreHost host, int permitCount, long now, out long retryAfter)
    {
        if (!host.TryAcquire(now, permitCount, out Admission admission, out retryAfter))
        {
            return AdmissionLost(key, entry) ? TierOutcome.Lost : TierOutcome.Refused; // as for a key's own state, above
        }

        if (AdmissionLost(key, entry))
        {
            return TierOutcome.Lost;
        }

        _counters.Succeeded();
        AdmissionObserver?.Invoke(key, admission);
        return TierOutcome.Admitted;
    }

    /// <summary>
    /// Gives the key per-core blocks over its entry, unless <see cref="PartitionedLimiterOptions.MaxHotKeys"/> are hot
    /// already or its link changed (a key limiter, an eviction, another promotion): those keep what they have.
    /// </summary>
    private void TryPromote(PartitionEntry<TState> entry, PartitionTier<TAlgorithm, TState> tier, long now)
    {
        if (!ReferenceEquals(Volatile.Read(ref entry.Link), tier) || !_hotKeys!.TryAdd())
        {
            return;
        }

        PartitionHotKey hot;
        try
        {
            hot = new PartitionHotKey(tier, tier.HotHost!(entry, now));
        }
#pragma warning disable CA1031 // the request was admitted and counted: a promotion, only a speed-up, must not fail it
        catch (Exception)
#pragma warning restore CA1031
        {
            _hotKeys.Remove(); // an allocation that failed must not keep the hot-key slot it took; the key stays as it was
            return;
        }

        if (Interlocked.CompareExchange(ref entry.Link, hot, tier) != tier)
        {
            _hotKeys.Remove();
        }
    }

    private RateEngineLease ProbeAdmitted()
    {
        _counters.Succeeded();
        return RateEngineLease.Acquired;
    }

    private RateEngineLease ProbeRefused(long retryAfter)
    {
        _counters.Failed();
        return RateEngineLease.Rejected(_clock.ToRetryAfter(retryAfter), ReasonPhrases.LimitReached);
    }

    private RateEngineLease Refuse(RateEngineLease refusal)
    {
        _counters.Failed();
        return refusal;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>The key of a request about to be decided: selected, checked, and refused if the limiter is disposed.</summary>
    private TKey ArrivingKey(TResource resource, int permitCount)
    {
        TKey key = SelectKey(resource);
        ThrowIfDisposed(key, permitCount);
        return key;
    }

    /// <summary>
    /// The resource's key. A null key is refused as the in-box partitioned limiter refuses it: counting every null-key
    /// request under one shared key would silently merge unrelated callers, and a null never matches a stored key.
    /// </summary>
    private TKey SelectKey(TResource resource)
    {
        TKey key = _keySelector(resource);
        if (key is null)
        {
            ThrowHelper.NullPartitionKey(nameof(resource));
        }

        return key;
    }

    /// <summary>As the single limiters: the permit count is checked against the key's limit before disposal.</summary>
    private void ThrowIfDisposed(TKey key, int permitCount)
    {
        if (_disposed)
        {
            _tierOf(key).CheckPermitCount(permitCount);
            ThrowIfDisposed();
        }
    }

    private enum TierOutcome
    {
        Refused,
        Admitted,
        Lost,
    }
}
