using System.Collections.Concurrent;
using System.Diagnostics;
using RateEngine.Timing;
using StackExchange.Redis;
namespace RateEngine.Redis.Hybrid;

/// <summary>
/// The hybrid mode's local side: per key, a block of permits reserved from Redis, taken by CAS; a reservation in flight is
/// shared by every caller that needs one, and one is started in the background when a busy key's block runs low, so
/// callers rarely wait. Unused permits go back when a block is replaced by one of a later period, when the key is idle and
/// on dispose.
/// </summary>
/// <typeparam name="TKey">The keys' state: a limiter's (with its rule) or a policy layer's (with its limit).</typeparam>
internal sealed class LocalReservations<TKey> : IAsyncDisposable
    where TKey : LocalKey
{
    /// <summary>
    /// A block smaller than this is not refilled in the background: its key has not shown the demand that would use a
    /// speculative block before its period ends (with many quiet keys, such blocks would hold permits nobody uses).
    /// </summary>
    private const long PrefetchFrom = 4;

    /// <summary>
    /// A key's first reservation on a node asks for this many (at most MaxBlock): with many keys, growing every key from one
    /// permit would cost each a waited round trip per doubling. Near the cap the script grants at most half of what is left
    /// beyond the request's own permits, so a first block never takes a busy key's last permits.
    /// </summary>
    private const long FirstBlock = 16;

    /// <summary>
    /// A block's life is cut by this fraction of it (1/1024, about 1,000 parts per million): the node's clock may run faster
    /// or slower than the server's (see <see cref="Install(Ticket, Reservation)"/>).
    /// </summary>
    internal const int DriftMarginShift = 10;

    private readonly ConcurrentDictionary<string, TKey> _keys = new(StringComparer.Ordinal);
    private readonly Func<Ticket, Task<Reservation>>? _reserve;
    private readonly Func<TKey, long, long, (Task<RedisResult> Answer, long FailuresWhenSent)>? _send;
    private readonly Func<Task<RedisResult>, long, Reservation>? _read;
    private readonly Func<TKey, long, long, Task> _return;
    private readonly Func<IReadOnlyList<(TKey Key, long Period, long Returned)>, Task>? _returnMany;
    private readonly TimeProvider _time;
    private readonly long _maxBlock;
    private readonly long _idleTicks;
    private readonly long _touchTicks;
    private readonly ITimer _sweeper;
    private readonly Func<bool> _mayCall;
    private readonly Action<TKey>? _passDebtOn;
    private volatile bool _disposed;

    /// <summary>Whether a take that leaves its block below half starts the refill (a layered policy batches its own instead).</summary>
    private readonly bool _prefetch;

    /// <summary>Reservations whose answers only the continuation of <paramref name="reserve"/> reads (a layered policy's).</summary>
    public LocalReservations(
        RedisHybridOptions options,
        TimeProvider time,
        Func<Ticket, Task<Reservation>> reserve,
        Func<TKey, long, long, Task> giveBack,
        Func<bool> mayCall,
        Func<IReadOnlyList<(TKey Key, long Period, long Returned)>, Task>? giveBackMany = null,
        bool prefetch = true,
        Action<TKey>? passDebtOn = null)
        : this(options, time, giveBack, mayCall, giveBackMany, prefetch, passDebtOn)
    {
        _reserve = reserve;
    }

    /// <summary>
    /// Reservations sent as one script call each (<paramref name="send"/>), whose answer <paramref name="read"/> turns into
    /// a reservation on whichever thread sees it first: the call's continuation, or a caller blocked on it (see
    /// <see cref="WaitForRefill"/>).
    /// </summary>
    public LocalReservations(
        RedisHybridOptions options,
        TimeProvider time,
        Func<TKey, long, long, (Task<RedisResult> Answer, long FailuresWhenSent)> send,
        Func<Task<RedisResult>, long, Reservation> read,
        Func<TKey, long, long, Task> giveBack,
        Func<bool> mayCall)
        : this(options, time, giveBack, mayCall, giveBackMany: null, prefetch: true, passDebtOn: null)
    {
        _send = send;
        _read = read;
    }

    private LocalReservations(
        RedisHybridOptions options,
        TimeProvider time,
        Func<TKey, long, long, Task> giveBack,
        Func<bool> mayCall,
        Func<IReadOnlyList<(TKey Key, long Period, long Returned)>, Task>? giveBackMany,
        bool prefetch,
        Action<TKey>? passDebtOn)
    {
        _passDebtOn = passDebtOn;
        _returnMany = giveBackMany;
        _prefetch = prefetch;
        _mayCall = mayCall;
        _time = time;
        _maxBlock = options.MaxBlock;
        _idleTicks = (long)(options.IdleReturn.TotalSeconds * time.TimestampFrequency);
        _touchTicks = Math.Max(1, _idleTicks / 64);
        _return = giveBack;
        _sweeper = ContextFreeTimer.Create(time, static state => ((LocalReservations<TKey>)state!).ReturnIdle(), this, options.IdleReturn, options.IdleReturn);
    }

    /// <summary>Whether the reservations were disposed: every key is forgotten, and none is kept any more.</summary>
    internal bool IsDisposed => _disposed;

    /// <summary>Keys held locally (tests).</summary>
    internal int KeyCount => _keys.Count;

    /// <summary>Whether a reservation for the key is in flight (tests: a fake clock must not jump past one still on the wire).</summary>
    internal bool RefillInFlight(string partitionKey) =>
        _keys.TryGetValue(partitionKey, out TKey? key) && Volatile.Read(ref key.Refill) is { IsCompleted: false };

    /// <summary>The key's local state, made with <paramref name="create"/> (which resolves its rule) on first touch.</summary>
    /// <remarks>
    /// Once disposed, a key that is not held (a lease that outlives the limiter, charging a key that was then forgotten) is
    /// made forgotten and not kept: a block that lands in it goes back, and nothing is left for a sweep that no longer runs.
    /// </remarks>
    public TKey KeyOf<TState>(string partitionKey, Func<string, TState, TKey> create, TState state)
    {
        if (_keys.TryGetValue(partitionKey, out TKey? key))
        {
            return key;
        }

        if (_disposed)
        {
            TKey unkept = create(partitionKey, state);
            unkept.Forgotten = true;
            return unkept;
        }

        TKey made = _keys.GetOrAdd(partitionKey, create, state);

        // Dispose may have begun after the check above and missed this key when it marked them all forgotten.
        Interlocked.MemoryBarrier();
        if (_disposed)
        {
            made.Forgotten = true;
        }

        return made;
    }

    /// <summary>Whether the key's live block on this node has a permit left (what a zero-permit probe asks).</summary>
    public bool HoldsPermit(string partitionKey) =>
        Find(partitionKey) is { } key
        && Volatile.Read(ref key.Block) is var block
        && Volatile.Read(ref block.Remaining) > 0
        && block.ServesAt(_time.GetTimestamp());

    /// <summary>The key's local state if this node holds it.</summary>
    public TKey? Find(string partitionKey) => _keys.TryGetValue(partitionKey, out TKey? key) ? key : null;

    /// <summary>
    /// Serves from the key's live block: the block taken from; null with <paramref name="refusedFor"/> set while a cached
    /// refusal lasts, or null alone when a reservation is needed. A refusal cached under a cap below <paramref name="cap"/>
    /// (the request's, where a key's requests come in several tiers) does not bind it.
    /// </summary>
    public LocalBlock? TryTake(TKey key, long permits, out TimeSpan? refusedFor, long cap = 0)
    {
        refusedFor = null;
        LocalBlock block = Volatile.Read(ref key.Block);
        long now;
        if (!block.Refused)
        {
            long left = block.TryTake(permits);
            if (left >= 0)
            {
                // One clock reading, after the take: the permit is used now, so it must be before the block's end (a
                // thread descheduled across the period's end does not use it: it was counted in a period that is over).
                now = _time.GetTimestamp();
                Touch(key, now);
                if (now >= block.ExpiresAt)
                {
                    // With what is left of the dead block: one return, not one per caller that meets it until the next lands.
                    ReturnUnused(key, block, permits + block.TakeAll());
                    return null;
                }

                // Low water: half the block left, so the next one is on its way before this one runs out (at a quarter, a
                // busy key's 64 callers ran dry within a round trip and all waited). Every acquire below the mark sees a
                // refill in flight without taking the key's lock or observing its task again.
                if (_prefetch && left * 2 < block.Granted && MayPrefetch(key, block))
                {
                    RedisTasks.Observe(StartRefill(key, need: 0));
                }

                return block;
            }
        }

        now = _time.GetTimestamp();
        Touch(key, now);
        if (now < block.ExpiresAt && block.Refused && Math.Max(permits, 1) >= block.RefusedNeed && block.Limit >= cap)
        {
            refusedFor = _time.GetElapsedTime(now, block.RetryAt);
        }

        return null; // a smaller request than the one refused asks Redis itself
    }

    /// <summary>
    /// Permits taken from <paramref name="block"/> that the clock read after the take found over: not used, so back to
    /// Redis as the block's other leftovers go when a later block replaces it (a counter's segment still counts them for
    /// the rest of its window; dropped, they would stay counted, unused).
    /// </summary>
    public void ReturnUnused(TKey key, LocalBlock block, long permits)
    {
        if (permits > 0 && _mayCall())
        {
            RedisTasks.Observe(_return(key, block.Period, permits));
        }
    }

    /// <summary>
    /// Gives back <paramref name="permits"/> taken from <paramref name="from"/> (a refund): into the key's live block when it
    /// is of the same period and reserved under a cap no lower than theirs; as a block of their own (under their cap) when
    /// the key has no live block (none yet, a cached refusal, one retired), valid as long as theirs was; otherwise to Redis,
    /// whose script takes them back while their period counts.
    /// </summary>
    /// <remarks>
    /// A block serves only requests whose cap is at least the one it was reserved under (tiers mixing on one key): permits
    /// a higher tier reserved must not join a lower tier's block, where the lower tier's requests would use them past
    /// their own cap.
    /// </remarks>
    public void GiveBack(TKey key, LocalBlock from, long permits)
    {
        while (permits > 0)
        {
            LocalBlock current = Volatile.Read(ref key.Block);
            long now = _time.GetTimestamp();
            bool live = current.ServesAt(now) && !key.Forgotten;
            if (live && current.Period == from.Period && current.Limit >= from.Limit)
            {
                Interlocked.Add(ref current.Remaining, permits);
                if (ReferenceEquals(Volatile.Read(ref key.Block), current) && !key.Forgotten)
                {
                    return;
                }

                // Replaced meanwhile: what its replacement did not move (merge or return) is still in it; take that back and
                // go again (what another caller took from it meanwhile was used, as a permit of a live block may be).
                permits = current.TakeUpTo(permits);
                continue;
            }

            if (!live && now < from.ExpiresAt && !key.Forgotten)
            {
                var revived = new LocalBlock(permits, permits, from.ExpiresAt, from.Period, refusedNeed: 0, from.Limit, from.UsedAtGrant) { PeriodEndsAt = from.PeriodEndsAt };
                if (Interlocked.CompareExchange(ref key.Block, revived, current) == current)
                {
                    // What the ended block left may still count on Redis (a counter's segment, for the rest of its window).
                    if (current.TakeAll() is var stale and > 0 && _mayCall())
                    {
                        RedisTasks.Observe(_return(key, current.Period, stale));
                    }

                    if (!key.Forgotten)
                    {
                        return;
                    }

                    permits = revived.TakeAll(); // the sweep forgot the key meanwhile: to Redis, next round
                }

                continue;
            }

            if (_mayCall())
            {
                RedisTasks.Observe(_return(key, from.Period, permits));
            }

            return;
        }
    }

    /// <summary>
    /// The reservation in flight for the key, or a new one for at least <paramref name="need"/> permits (0 for a background
    /// refill, which installs nothing when Redis grants nothing). The caller takes from the installed block afterwards.
    /// </summary>
    public Task<LocalBlock> StartRefill(TKey key, long need) => StartRefill(key, need, out _);

    /// <summary>
    /// <see cref="StartRefill(TKey, long)"/>; <paramref name="joined"/> says that the caller sent nothing (it joined the
    /// reservation in flight), so a half-open probe it holds was not used.
    /// </summary>
    public Task<LocalBlock> StartRefill(TKey key, long need, out bool joined)
    {
        TaskCompletionSource<LocalBlock>? claimed = Claim(key, out Task<LocalBlock> refill);
        joined = claimed is null;
        if (claimed is not { } completion)
        {
            return refill;
        }

        if (need == 0)
        {
            // A background refill: the caller that crossed the low-water mark returns at once, and the pool sizes and sends
            // it (without the caller's execution context, nor a clock reading of its own on the caller's time: the
            // reservation serves every caller of the key).
            var queued = new QueuedSend(this, key, completion);
            Volatile.Write(ref key.OnTheWire, queued); // a caller blocked on the refill may send it first (WaitForRefill)
            if (!HoldBackgroundSends)
            {
                ThreadPool.UnsafeQueueUserWorkItem(queued, preferLocal: false);
            }

            return refill;
        }

        // A caller waits for this one: sent from here, without a hop through a busy pool, and without the caller's execution
        // context (the reservation serves every caller of the key).
        Ticket ticket = Size(key, need, completion);
        _ = RedisTasks.WithoutFlow(static state => state.Self.Send(state.Ticket), (Self: this, Ticket: ticket));
        return refill;
    }

    /// <summary>
    /// Begins a reservation for the key, unless one is in flight (then null, and <paramref name="refill"/> is that one): the
    /// ticket says what to ask Redis for; the caller sends it (alone, or in one call with other keys' tickets) and hands the
    /// answer to <see cref="Finish"/>, or the error to <see cref="Fail(Ticket, Exception)"/>.
    /// </summary>
    public Ticket? Begin(TKey key, long need, out Task<LocalBlock> refill) =>
        Claim(key, out refill) is { } completion ? Size(key, need, completion) : null;

    /// <summary>Makes the key's refill this caller's to send, unless one is in flight (null; <paramref name="refill"/> is that one).</summary>
    public static TaskCompletionSource<LocalBlock>? Claim(TKey key, out Task<LocalBlock> refill)
    {
        lock (key)
        {
            if (key.Refill is { IsCompleted: false } inFlight)
            {
                refill = inFlight;
                return null;
            }

            // Waiters resume on the pool, not one after another on the thread that completes the refill.
            var completion = new TaskCompletionSource<LocalBlock>(TaskCreationOptions.RunContinuationsAsynchronously);
            key.Refill = completion.Task;
            refill = completion.Task;
            return completion;
        }
    }

    /// <summary>
    /// A background refill queued on the pool: sent by the pool, or first by a caller blocked on it (on a starved pool the
    /// work item may wait there past that caller's bound, with nothing on the wire).
    /// </summary>
    private sealed class QueuedSend(LocalReservations<TKey> owner, TKey key, TaskCompletionSource<LocalBlock> completion) : IThreadPoolWorkItem
    {
        private int _taken;

        public Task<LocalBlock> Refill => completion.Task;

        /// <summary>Sizes the refill for <paramref name="need"/> (0 from the pool) and sends it, unless another thread did; false then.</summary>
        public bool TrySend(long need)
        {
            if (Interlocked.Exchange(ref _taken, 1) != 0)
            {
                return false;
            }

            Interlocked.CompareExchange(ref key.OnTheWire, null, this);
            owner.SizeAndSend(key, need, completion);
            return true;
        }

        public void Execute() => TrySend(need: 0);
    }

    /// <summary>A background refill, on the pool: sized and sent; a clock that throws has failed the refill (see <see cref="Size"/>).</summary>
    private void SizeAndSend(TKey key, long need, TaskCompletionSource<LocalBlock> completion)
    {
        Ticket ticket;
        try
        {
            ticket = Size(key, need, completion);
        }
        catch (Exception) when (completion.Task.IsCompleted)
        {
            return; // on the pool there is nobody to throw to: Size failed the refill with it, and that task is observed
        }

        _ = Send(ticket);
    }

    /// <summary>What a claimed refill asks for, sized now.</summary>
    /// <remarks>
    /// A clock that throws fails the claimed refill with its exception before it goes on: left in flight, every caller of
    /// the key would join it and wait for good, and nothing would sweep or dispose the key.
    /// </remarks>
    public Ticket Size(TKey key, long need, TaskCompletionSource<LocalBlock> completion)
    {
        long sent;
        try
        {
            sent = _time.GetTimestamp();
        }
        catch (Exception error)
        {
            Fail(key, completion, error);
            throw;
        }

        // Doubling with demand: a block that ran low or out within its period asks for twice its size, so a busy key's
        // blocks grow to MaxBlock; one whose period ended asks for twice what it served, and after a refusal one permit, so
        // a quiet or capped key's blocks shrink toward one permit. The size is what the node holds once the new block is in:
        // what is left in the current block joins it (same period), so the reservation asks for the size minus that, and a
        // node never holds more than MaxBlock unused permits of a key, the bound the under-admission is documented by.
        // Sizes count requests: a weighted layer's blocks are that many of its largest requests (Unit).
        LocalBlock current = Volatile.Read(ref key.Block);
        long unit = Math.Max(1, Volatile.Read(ref key.Unit));
        long maxBlock = unit > long.MaxValue / 4 / _maxBlock ? long.MaxValue / 4 : _maxBlock * unit;
        long left = current.Refused ? 0 : Volatile.Read(ref current.Remaining);
        long size = ReferenceEquals(current, LocalBlock.Empty) ? FirstBlock * unit
            : current.Refused ? 1
            : sent < current.ExpiresAt ? 2 * current.Granted
            : 2 * (current.Granted - left);
        long want = Math.Max(need, Math.Clamp(size, 1, maxBlock));

        // What the live block still has joins the new one if Redis grants it in the same period: the request then needs only
        // the rest (a request larger than what is left would otherwise need its whole size free on Redis, besides the
        // leftover this node already holds). Granted in a later period, it falls short and the caller asks again.
        long usable = current.ServesAt(sent) ? left : 0;
        long ask = need > 0 ? Math.Max(1, need - usable) : 0;
        return new Ticket(key, need, ask, Math.Max(ask, want - usable), sent, completion);
    }

    /// <summary>Installs a reservation's answer and completes the key's refill with the block it made (once per ticket).</summary>
    public void Finish(Ticket ticket, Reservation reply)
    {
        if (ticket.Settle())
        {
            Complete(ticket, reply);
        }
    }

    /// <summary>Installs a settled ticket's answer and completes its refill with the block (or the install's error).</summary>
    private void Complete(Ticket ticket, Reservation reply)
    {
        try
        {
            ticket.Completion.SetResult(Install(ticket, reply));
        }
        catch (Exception error)
        {
            ticket.Completion.TrySetException(error);
        }

        LetGo(ticket);
    }

    /// <summary>
    /// Lets go of a completed refill: the key would otherwise keep its task for good (about 70 bytes a key on every node,
    /// between the hot objects of the keys around it). Whoever awaited it holds it still; a new refill replaces it anyway.
    /// </summary>
    private static void LetGo(TKey key, TaskCompletionSource<LocalBlock> completion) =>
        Interlocked.CompareExchange(ref key.Refill, null, completion.Task);

    private static void LetGo(Ticket ticket)
    {
        LetGo(ticket.Key, ticket.Completion);
        Interlocked.CompareExchange(ref ticket.Key.OnTheWire, null, ticket);
    }

    /// <summary>Completes the key's refill with the error its reservation met (nothing is installed; once per ticket).</summary>
    /// <remarks>Observed here: a background refill nobody joined would otherwise raise an unobserved task exception.</remarks>
    public static void Fail(Ticket ticket, Exception error)
    {
        if (ticket.Settle())
        {
            FailSettled(ticket, error);
        }
    }

    private static void FailSettled(Ticket ticket, Exception error)
    {
        Fail(ticket.Key, ticket.Completion, error);
        Interlocked.CompareExchange(ref ticket.Key.OnTheWire, null, ticket);
    }

    /// <summary>Completes a claimed refill with <paramref name="error"/>, sized or not, and lets the key claim another.</summary>
    public static void Fail(TKey key, TaskCompletionSource<LocalBlock> completion, Exception error)
    {
        completion.TrySetException(error);
        RedisTasks.Observe(completion.Task);
        LetGo(key, completion);
    }

    /// <summary>A reservation begun for one key: what to ask for, and when it was sent (a block's life counts from then).</summary>
    internal sealed record Ticket(TKey Key, long Need, long Ask, long Want, long Sent, TaskCompletionSource<LocalBlock> Completion)
    {
        /// <summary>The client's own task for the script call that carries this ticket (alone, or in a policy's batch); set before it is published.</summary>
        public Task<RedisResult>? Answer;

        /// <summary>The breaker's failure count when the call was sent: an answer closes it unless it tripped since.</summary>
        public long FailuresWhenSent;

        /// <summary>When the call was sent (<see cref="Stopwatch"/> time): a layered policy's sync acquire that joins it judges an outage by it.</summary>
        public long SentAt;

        private int _settled;

        /// <summary>Claims the ticket's one install or failure: false when another thread's came first.</summary>
        public bool Settle() => Interlocked.Exchange(ref _settled, 1) == 0;
    }

    /// <summary>How <see cref="WaitForRefill"/> ended.</summary>
    internal enum RefillWait
    {
        /// <summary>The refill completed (with a block, or with its error).</summary>
        Completed,

        /// <summary>The caller's reservation was on the wire for the whole bound and Redis did not answer: an outage.</summary>
        Unanswered,

        /// <summary>
        /// Not completed within the bound, but nothing proves Redis slow: the refill was not yet sent when the wait began (a
        /// background one queued on a busy pool), or another thread claimed its answer and had not installed it in time.
        /// </summary>
        Unfinished,
    }

    /// <summary>
    /// Blocks at most <paramref name="bound"/> for the key's <paramref name="refill"/>. The client completes its own task on
    /// its reader thread, but the continuation that installs the answer needs a pool thread, and so does a background
    /// refill's send: on a pool starved by blocked callers either may wait there past the bound though Redis would answer
    /// in time, and the caller would report an outage. So the caller sends a queued background refill itself, waits for
    /// the call on the wire rather than its continuation, and once Redis answered installs the answer itself unless the
    /// continuation already did.
    /// </summary>
    /// <param name="key">The key.</param>
    /// <param name="refill">The refill the caller started or joined.</param>
    /// <param name="need">The caller's permits: what a queued refill it sends itself is sized for.</param>
    /// <param name="bound">The longest the caller blocks.</param>
    /// <param name="sentHere">Set when the caller sent the refill it had joined (a half-open probe it holds was used).</param>
    public RefillWait WaitForRefill(TKey key, Task<LocalBlock> refill, long need, TimeSpan bound, out bool sentHere)
    {
        Debug.Assert(_read is not null, "Only reservations whose answers a waiting thread can read are waited for here.");
        sentHere = false;
        long started = Stopwatch.GetTimestamp();
        bool sinceTheStart = true; // the reservation was found on the wire (or sent from here) at the first look
        while (!refill.IsCompleted)
        {
            TimeSpan left = bound - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
            {
                return RefillWait.Unfinished;
            }

            object? onTheWire = Volatile.Read(ref key.OnTheWire);
            if (onTheWire is QueuedSend queued && ReferenceEquals(queued.Refill, refill))
            {
                if (TrySendQueued(queued, need))
                {
                    sentHere = true;
                    continue;
                }

                sinceTheStart = false; // the pool took it meanwhile: on the wire from some later moment
            }

            if (onTheWire is Ticket { Answer: { } answer } ticket && ReferenceEquals(ticket.Completion.Task, refill))
            {
                return WaitForAnswer(ticket, answer, left, sinceTheStart);
            }

            // Claimed and not yet on the wire (being sized, or batched by another sender): looked at again shortly.
            sinceTheStart = false;
            if (refill.Wait(left < RefillPoll ? left : RefillPoll))
            {
                break;
            }
        }

        return RefillWait.Completed;
    }

    /// <summary>How often <see cref="WaitForRefill"/> looks again for a refill that was claimed but not yet sent.</summary>
    private static readonly TimeSpan RefillPoll = TimeSpan.FromMilliseconds(5);

    private RefillWait WaitForAnswer(Ticket ticket, Task<RedisResult> answer, TimeSpan bound, bool sinceTheStart)
    {
        Task<LocalBlock> refill = ticket.Completion.Task;
        long started = Stopwatch.GetTimestamp();
        try
        {
            if (!answer.Wait(bound))
            {
                // Unanswered for the whole bound is an outage; unanswered since a later look at it proves nothing.
                return refill.IsCompleted ? RefillWait.Completed : sinceTheStart ? RefillWait.Unanswered : RefillWait.Unfinished;
            }
        }
        catch (AggregateException)
        {
            // Answered with an error: it fails the refill below, and the caller's wait on the refill throws it.
        }

        // Installed without the caller's execution context, as the continuation would (it may start returns to Redis).
        RedisTasks.WithoutFlow(static state => state.Self.SettleAnswered(state.Ticket), (Self: this, Ticket: ticket));

        // Completed above, or by the continuation that claimed the answer first and is installing it now.
        TimeSpan left = bound - Stopwatch.GetElapsedTime(started);
        return refill.Wait(left > TimeSpan.Zero ? left : TimeSpan.Zero) ? RefillWait.Completed : RefillWait.Unfinished;
    }

    /// <summary>
    /// Sends the key's background refill still queued on the pool, sized for <paramref name="need"/>, if it is the one for
    /// <paramref name="refill"/> and no other thread sent it first: a caller blocked on it on a starved pool.
    /// </summary>
    public bool TrySendQueued(TKey key, Task<LocalBlock> refill, long need) =>
        Volatile.Read(ref key.OnTheWire) is QueuedSend queued && ReferenceEquals(queued.Refill, refill) && TrySendQueued(queued, need);

    /// <summary>Sent without the caller's execution context (the reservation serves every caller of the key).</summary>
    private static bool TrySendQueued(QueuedSend queued, long need) =>
        RedisTasks.WithoutFlow(static state => state.Queued.TrySend(state.Need), (Queued: queued, Need: need));

    /// <summary>Reads a completed call's answer into its ticket: installed, or the refill failed with the call's error.</summary>
    private void SettleAnswered(Ticket ticket)
    {
        Debug.Assert(ticket.Answer is { IsCompleted: true }, "Settled once answered.");
        if (!ticket.Settle())
        {
            return;
        }

        Reservation reply;
        try
        {
            reply = _read!(ticket.Answer!, ticket.FailuresWhenSent);
        }
        catch (Exception error)
        {
            FailSettled(ticket, error);
            return;
        }

        Complete(ticket, reply);
    }

    public async ValueTask DisposeAsync()
    {
        _disposed = true;

        // From now on no request finds these keys: as for keys the idle sweep forgot, a block that lands in one goes back,
        // and so does a refund from a lease that outlives the limiter (kept in a block here, nobody would use or return it).
        foreach (TKey key in _keys.Values)
        {
            key.Forgotten = true;
        }
        await _sweeper.DisposeAsync().ConfigureAwait(false);

        // A reservation still in flight installs its block when it lands: wait for it, so its permits go back too. Not while
        // Redis is known to be away (the breaker open): it would wait out the client's timeout, and a block that lands in a
        // forgotten key goes back by itself.
        foreach (TKey key in _keys.Values)
        {
            if (_mayCall())
            {
                await WhenSettled(key).ConfigureAwait(false);
            }
        }

        // A key that still owes Redis a charge (an overrun that no reservation has carried yet: one refused near the cap,
        // one that failed, or none sent while the breaker was open) sends it now: after this, nothing on this node would.
        // Rounds, as a request's own debt count takes them: a charge while the reservation is on the wire joins it without
        // riding on it (the ticket was sized before), and a grant that does not come (the key at its cap) pays none of it.
        foreach (TKey key in _keys.Values)
        {
            for (int round = 0; round < 3 && !key.MayForget && _mayCall(); round++)
            {
                try
                {
                    await WhenSettled(key).ConfigureAwait(false);
                    await StartRefill(key, need: 0).ConfigureAwait(false);
                }
                catch (Exception error) when (error is RedisException or TimeoutException or ObjectDisposedException)
                {
                    // Redis is unreachable (or the connection was disposed first): the debt goes with the node, as any charge
                    // this node could not send.
                    break;
                }
            }
        }

        try
        {
            // Best effort, and not at all while Redis is known to be away (the breaker open): a dispose must not wait out the
            // client's timeout, nor throw it. Permits not given back stay counted until their periods end (stricter).
            if (!_mayCall())
            {
                return;
            }

            if (_returnMany is null)
            {
                await Task.WhenAll(_keys.Values.Select(ReturnLeftover)).ConfigureAwait(false);
            }
            else
            {
                List<(TKey Key, long Period, long Returned)> returns = [.. _keys.Values.Select(TakeLeftover).OfType<(TKey Key, long Period, long Returned)>()];
                if (returns.Count > 0)
                {
                    await _returnMany(returns).ConfigureAwait(false);
                }
            }
        }
        catch (Exception error) when (error is RedisException or TimeoutException or ObjectDisposedException)
        {
            // Redis went away meanwhile, or the application disposed its connection first: as above.
        }
        finally
        {
            _keys.Clear();
        }
    }

    /// <summary>
    /// Whether a background refill of the key may start now: its block is big enough to have shown demand, none is in
    /// flight, and Redis may be called. (The caller decides how low the block must be.)
    /// </summary>
    public bool MayPrefetch(TKey key, LocalBlock block) =>
        block.Granted >= PrefetchFrom && Volatile.Read(ref key.Refill) is not { IsCompleted: false } && !_disposed && _mayCall();

    /// <summary>Completes when the key's reservation in flight, if any, has landed or failed.</summary>
    public static Task WhenSettled(TKey key) =>
        Volatile.Read(ref key.Refill) is { IsCompleted: false } refill
            ? refill.ContinueWith(static _ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default)
            : Task.CompletedTask;

    /// <summary>Notes a use at most once per touch interval: a write per acquire would bounce the key's cache line between cores.</summary>
    private void Touch(TKey key, long now)
    {
        if (now - Volatile.Read(ref key.LastUsed) >= _touchTicks)
        {
            Volatile.Write(ref key.LastUsed, now);
        }
    }

    private async Task Send(Ticket ticket)
    {
        if (_send is null)
        {
            try
            {
                Finish(ticket, await _reserve!(ticket).ConfigureAwait(false));
            }
            catch (Exception error)
            {
                Fail(ticket, error);
            }

            return;
        }

        Task<RedisResult> answer;
        try
        {
            (answer, ticket.FailuresWhenSent) = _send(ticket.Key, ticket.Ask, ticket.Want);
        }
        catch (Exception error)
        {
            Fail(ticket, error); // a clock or a client that threw before anything was sent
            return;
        }

        // Published with its answer, for a blocked caller of the key to read it (WaitForRefill).
        ticket.SentAt = Stopwatch.GetTimestamp();
        ticket.Answer = answer;
        Volatile.Write(ref ticket.Key.OnTheWire, ticket);
        await ((Task)answer).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        if (AnswersReadLate is { } late)
        {
            await late().ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        SettleAnswered(ticket);
    }

    /// <summary>Tests: background refills are claimed and never queued, as on a pool too starved to run them.</summary>
    internal bool HoldBackgroundSends { get; set; }

    /// <summary>Tests: awaited after a reservation's answer, before its continuation reads it (as on a starved pool).</summary>
    internal Func<Task>? AnswersReadLate { get; set; }

    private LocalBlock Install(Ticket ticket, Reservation reply)
    {
        TKey key = ticket.Key;
        long need = ticket.Need;
        long sent = ticket.Sent;
        long granted = reply.Granted;
        long retryAfter = reply.RetryAfter;
        long validFor = reply.ValidFor;
        long period = reply.Period;
        LocalBlock old = Volatile.Read(ref key.Block);
        if (granted == 0)
        {
            if (need == 0)
            {
                return old; // a background refill near the cap: keep serving what is left
            }

            // Cached for at most IdleReturn: other nodes give unused permits back within that, and a day's budget refused
            // here must not stay refused until midnight while another node's leftover sits on Redis again.
            long retryAt = sent + Ticks(retryAfter);
            var refused = new LocalBlock(0, 0, Math.Min(retryAt, sent + _idleTicks), period, refusedNeed: Math.Max(need, 1), reply.Limit, reply.Used, retryAt);
            Install(key, refused, old);
            return refused;
        }

        // Valid from before the call was sent: never past the period's end on the server, as long as the node's clock runs
        // at the server's rate. It does not quite (a clock no NTP disciplines drifts by tens of parts per million, and a
        // day's or a month's block would outlive its period by seconds to minutes), so a block's life is cut by 1/1024 of
        // it: clocks that differ by less than about 1,000 ppm never use a permit after its period ends on the server. The
        // cut comes at the end of each block, where a refill's new block covers most of what is left. A debt made meanwhile
        // is paid from it, but only while its period lasts: a debt paid from an ended period's permits would not count now.
        long life = Ticks(validFor);
        long expiresAt = sent + life - (life >> DriftMarginShift);
        long paid = _time.GetTimestamp() < expiresAt ? key.PayFromGrant(granted) : 0;
        var block = new LocalBlock(granted, granted - paid, expiresAt, period, refusedNeed: 0, reply.Limit, reply.Used) { PeriodEndsAt = sent + life };
        Install(key, block, old);
        return block;
    }

    private void Install(TKey key, LocalBlock block, LocalBlock old)
    {
        // Exchanged, not written: a block a refund revived since `old` was read is the one replaced, and its permits move too.
        LocalBlock replaced = Interlocked.Exchange(ref key.Block, block);
        MoveLeftover(key, block, old);
        if (!ReferenceEquals(replaced, old))
        {
            MoveLeftover(key, block, replaced);
        }

        if (key.Forgotten && _mayCall())
        {
            // Nobody finds this key any more: its permits go back, merged ones too (not while Redis is known to be away, as
            // the sweep's and dispose's returns: background calls skip the cool-downs).
            RedisTasks.Observe(ReturnLeftover(key));
        }
    }

    /// <summary>A replaced block's unused permits: into the new block if of the same period, otherwise back to Redis.</summary>
    private void MoveLeftover(TKey key, LocalBlock block, LocalBlock from)
    {
        long leftover = from.TakeAll();
        if (leftover <= 0)
        {
            return;
        }

        if (!block.Refused && from.Period == block.Period)
        {
            Interlocked.Add(ref block.Remaining, leftover); // same period: just as valid in the new block
            if (ReferenceEquals(Volatile.Read(ref key.Block), block))
            {
                return;
            }

            // The new block was replaced or retired (a tier change) since its install, maybe before this add: what is
            // still in it would sit unused until its period ends, so it goes back too.
            leftover = block.TakeAll();
            if (leftover <= 0)
            {
                return;
            }
        }

        if (_mayCall())
        {
            // Its period may be over yet still counted (a counter's segment, for the rest of the window): the script takes
            // the permits back while it counts them, and ignores them after.
            RedisTasks.Observe(_return(key, from.Period, leftover));
        }
    }

    private long Ticks(long microseconds) => (long)(microseconds * (_time.TimestampFrequency / 1_000_000.0));

    private void ReturnIdle()
    {
        // A timer's callback: an exception here would end the process. The sweep is best effort, and the next one goes on.
        try
        {
            SweepIdle();
        }
        catch (Exception error) when (error is RedisException or TimeoutException or ObjectDisposedException or InvalidOperationException)
        {
        }
    }

    private void SweepIdle()
    {
        // While Redis is known to be away (the breaker open) idle keys are still forgotten, so that keys do not pile up over
        // an outage, but their leftovers are not sent into it: they stay counted until their periods end (stricter).
        bool mayReturn = _mayCall();
        List<(TKey Key, long Period, long Returned)>? returns = null;
        long now = _time.GetTimestamp();
        foreach (KeyValuePair<string, TKey> entry in _keys)
        {
            TKey key = entry.Value;

            // LastUsed lags by up to one touch interval (1/64 of IdleReturn): a key may go that much early, which only costs
            // it a reservation when it comes back.
            if (now - Volatile.Read(ref key.LastUsed) >= _idleTicks && key.Refill is not { IsCompleted: false })
            {
                if (!key.MayForget)
                {
                    // It owes Redis a charge its next reservation carries: send one now, forget it once paid.
                    if (mayReturn)
                    {
                        RedisTasks.Observe(StartRefill(key, need: 0));
                    }

                    continue;
                }

                // Forgotten first: a refund from a lease that still holds the key then goes to Redis, not into its block.
                key.Forgotten = true;
                _keys.TryRemove(entry);

                // A charge may have added a debt since MayForget above. It reads the flag after its add and this reads the debt
                // after the flag, so one of the two sees the other; and with the key out of the table, the key's live state that
                // the debt is passed on to is a new one, which the next sweep or reservation sends.
                Interlocked.MemoryBarrier();
                if (!key.MayForget)
                {
                    _passDebtOn?.Invoke(key);
                }
                if (!mayReturn)
                {
                    continue;
                }

                if (_returnMany is null)
                {
                    RedisTasks.Observe(ReturnLeftover(key));
                }
                else if (TakeLeftover(key) is { } leftover)
                {
                    (returns ??= []).Add(leftover);
                }
            }
        }

        if (returns is not null)
        {
            RedisTasks.Observe(_returnMany!(returns)); // one call for the sweep's keys (they share one hash tag)
        }
    }

    /// <summary>The key's unused permits, taken out of its block to go back, or null when it has none.</summary>
    private static (TKey Key, long Period, long Returned)? TakeLeftover(TKey key)
    {
        LocalBlock block = Volatile.Read(ref key.Block);
        long leftover = block.TakeAll();
        return leftover > 0 && !block.Refused ? (key, block.Period, leftover) : null;
    }

    private Task ReturnLeftover(TKey key) =>
        TakeLeftover(key) is { } leftover ? _return(key, leftover.Period, leftover.Returned) : Task.CompletedTask;
}
