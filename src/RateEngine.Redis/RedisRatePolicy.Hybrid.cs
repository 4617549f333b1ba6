using System.Diagnostics;
using System.Globalization;
using System.Runtime.ExceptionServices;
using RateEngine.Policies;
using RateEngine.Redis.Hybrid;
using RateEngine.Redis.Policies;
using RateEngine.Redis.Scripts;
using StackExchange.Redis;

namespace RateEngine.Redis;

// The hybrid mode: the fixed-window, counter and calendar layers are served from local blocks, reserved per layer and key
// by the hybrid machinery of the limiters (LocalReservations); the other layers (log, bucket, concurrency) are decided by
// one exact script call per request, after the local layers have taken their share. All or nothing still holds: a layer
// that refuses gives back what the others took, into their blocks.
public sealed partial class RedisRatePolicy<TContext>
{
    private const int MaxLocalAttempts = 32;

    /// <summary>How many times a request whose blocks' periods ended before its admission is decided again before it is refused.</summary>
    private const int MaxExpiredDecisions = 4;

    /// <summary>The block-served layer at <paramref name="index"/> among the block-served layers.</summary>
    internal RedisPolicyLayer<TContext> BlockLayer(int index) => _blockLayers[index];

    /// <summary>
    /// Gives back <paramref name="amounts"/> of a request's takes: into each key's live block of the period it was taken
    /// in, or to Redis while that period counts it.
    /// </summary>
    internal void GiveBack(LocalTakes takes, long[] amounts)
    {
        for (int i = 0; i < amounts.Length; i++)
        {
            if (amounts[i] > 0 && takes.From[i] is { } from)
            {
                _blockLayers[i].Blocks!.GiveBack(takes.Keys[i], from, amounts[i]);
            }
        }
    }

    /// <summary>
    /// Reads the blocks' clock once before a lease charges any overrun: a clock that fails there fails the charge with
    /// nothing counted (a retry is safe); one that fails part-way, after this read, is handled in
    /// <see cref="ChargeOverrun"/>, where the whole step counts.
    /// </summary>
    internal void CheckClock() => _blockClock.GetTimestamp();

    /// <summary>
    /// Charges an overrun now: from the key's live block as far as it goes (those permits are counted on Redis already),
    /// the rest as the key's debt, which a reservation started now counts on Redis. Returns whether a debt is owed.
    /// </summary>
    /// <remarks>
    /// Nothing charged is lost to a clock that throws here: the debt is added before anything that reads the clock again,
    /// and a take whose period the clock could not confirm counts as one from an ended block (its permits go back, the
    /// whole overrun is owed). The first exception is thrown once that is done.
    /// </remarks>
    internal bool ChargeOverrun(int index, LayerKey key, long amount)
    {
        RedisPolicyLayer<TContext> layer = _blockLayers[index];
        LocalBlock block = Volatile.Read(ref key.Block);
        ExceptionDispatchInfo? failed = null;
        long unused = 0;
        if (!block.Refused && !key.Forgotten)
        {
            // The clock after the take, as a take from a block does: permits taken from a block whose period ended
            // meanwhile (a thread descheduled across it) do not count now, so the whole overrun is owed.
            long taken = block.TakeUpTo(amount);
            bool live = false;
            try
            {
                live = _blockClock.GetTimestamp() < block.ExpiresAt;
            }
            catch (Exception error)
            {
                failed = ExceptionDispatchInfo.Capture(error);
            }

            if (live)
            {
                amount -= taken;
            }
            else
            {
                unused = taken;
            }
        }

        if (amount > 0)
        {
            key = AddDebt(layer, key, amount);
        }

        // Each reads the breaker, whose clock may throw: the debt is in already, and one failing does not skip the other.
        try
        {
            layer.Blocks!.ReturnUnused(key, block, unused);
        }
        catch (Exception error)
        {
            failed ??= ExceptionDispatchInfo.Capture(error); // the take stays counted, unused (stricter, by at most the take)
        }

        try
        {
            if (amount > 0)
            {
                StartCarrying(layer, key);
            }
        }
        catch (Exception error)
        {
            failed ??= ExceptionDispatchInfo.Capture(error); // the debt waits for the key's next reservation
        }

        failed?.Throw();
        return amount > 0;
    }

    /// <summary>
    /// Adds to a key's debt and starts the reservation that counts it (not while Redis is known to be away). One already on
    /// the wire read the debt when it was sized, before this part: it pays this part only from a grant, so once it lands
    /// without one (refused, or nothing left at the cap), one more reservation carries what is still owed.
    /// </summary>
    private void Owe(RedisPolicyLayer<TContext> layer, LayerKey key, long amount) => StartCarrying(layer, AddDebt(layer, key, amount));

    /// <summary>Starts the reservation that counts a key's debt, unless Redis is known to be away (see <see cref="Owe"/>).</summary>
    private void StartCarrying(RedisPolicyLayer<TContext> layer, LayerKey key)
    {
        if (!_breaker.IsOpen)
        {
            Task<LocalBlock> refill = layer.Blocks!.StartRefill(key, need: 0, out bool joined);
            RedisTasks.Observe(joined ? CarryAfter(refill, layer, key) : refill);
        }
    }

    /// <summary>After the reservation a debt joined lands: another for what it did not carry, if the key still owes.</summary>
    private async Task CarryAfter(Task<LocalBlock> joined, RedisPolicyLayer<TContext> layer, LayerKey key)
    {
        try
        {
            await joined.ConfigureAwait(false);
        }
        catch (Exception) when (joined.IsFaulted || joined.IsCanceled)
        {
            // Its failure is the business of whoever sent it; the debt is still owed, and is tried below.
        }

        if (Volatile.Read(ref key.Debt) > 0 && !key.Forgotten && !_breaker.IsOpen)
        {
            await layer.Blocks!.StartRefill(key, need: 0).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The idle sweep forgot a key that a charge had just put a debt on: no sweep or dispose would ever send a forgotten key's
    /// debt, so it moves to the key's live state (a new one) and a reservation that counts it starts.
    /// </summary>
    internal void PassDebtOn(RedisPolicyLayer<TContext> layer, LayerKey forgotten)
    {
        long stranded = Interlocked.Exchange(ref forgotten.Debt, 0);
        if (stranded > 0) // else a charge passed it on first
        {
            Owe(layer, forgotten, stranded);
        }
    }

    /// <summary>
    /// Adds to the debt of a key's live state and returns the state that holds it. The add comes before the check of the
    /// key's flag, and the idle sweep sets the flag before it checks the debt again, so a debt added while the sweep forgets
    /// the key is seen by one of the two, and whichever takes it off the forgotten key (an exchange) passes it on. Once the
    /// policy is disposed there is no live state to move to (every key is forgotten): the debt stays on the key, and a
    /// reservation started on it still carries it.
    /// </summary>
    private static LayerKey AddDebt(RedisPolicyLayer<TContext> layer, LayerKey key, long amount)
    {
        while (true)
        {
            key = layer.Live(key);
            Interlocked.Add(ref key.Debt, amount);
            if (!key.Forgotten)
            {
                return key;
            }

            // Forgotten meanwhile. Still in the table (the sweep removes it after the flag): the sweep's own check passes the
            // debt on. Disposed: nowhere to go. Otherwise the key's live state is a new one, which a sweep may be forgetting
            // in turn (a new state is idle until used): the next pass adds to it under the same rule.
            LayerKey live = layer.Live(key);
            if (ReferenceEquals(live, key) || layer.Blocks!.IsDisposed)
            {
                return key;
            }

            amount = Interlocked.Exchange(ref key.Debt, 0);
            if (amount == 0)
            {
                return live; // the sweep passed it on
            }

            key = live;
        }
    }

    /// <summary>
    /// Waits until the request's keys have paid their debts to Redis: first the reservation in flight (the one the charge
    /// started, which may already have taken the debt off the key, or one sent before it, whose grant pays what it can),
    /// then at most one more for what is still owed. A debt that Redis does not take now stays owed, for the next one.
    /// </summary>
    internal async Task CountDebtsAsync(LocalTakes takes)
    {
        for (int i = 0; i < takes.Keys.Length; i++)
        {
            // The key's live state: a charge on a key the idle sweep forgot moved its debt there.
            LayerKey key = _blockLayers[i].Live(takes.Keys[i]);

            // Bounded: other requests on the key may keep starting reservations; a debt left over rides on the next one.
            for (int round = 0; round < 3; round++)
            {
                await LocalReservations<LayerKey>.WhenSettled(key).ConfigureAwait(false);
                if (Volatile.Read(ref key.Debt) == 0)
                {
                    if (Volatile.Read(ref key.Refill) is { IsCompleted: false })
                    {
                        continue; // started meanwhile, maybe with the debt on it
                    }

                    break;
                }

                if (_breaker.IsOpen)
                {
                    break; // Redis is away: the debt stays owed, for the key's next reservation
                }

                try
                {
                    await _blockLayers[i].Blocks!.StartRefill(key, need: 0).ConfigureAwait(false);
                }
                catch (RedisServerException error) when (RedisBreaker.IsScriptError(error))
                {
                    // Redis answered: not an outage (the reservation closed the breaker for it). The debt stays owed (the
                    // reservation puts it back), and the key's next acquire, which runs the same script, throws the error to
                    // its caller; a reconcile does not, so that the rest of its settling still goes to Redis.
                    return;
                }
                catch (Exception error) when (error is RedisException or TimeoutException)
                {
                    Trip(error.Message);
                    return;
                }
            }
        }
    }

    private async ValueTask<PolicyLease> AcquireHybridAsync(TContext context, RequestCost estimate, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (_pause.Reason is not null)
        {
            // Paused as this node last heard: ask the switch itself, so a resume on any node takes effect here at once.
            await CheckPauseAsync(requested: true).ConfigureAwait(false);
            if (_pause.Reason is { } paused)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                return PausedBy(paused);
            }
        }

        LocalTakes? takes = PrepareLocal(context, estimate, out PolicyLease? answer);
        if (takes is null)
        {
            return answer!;
        }

        for (int decided = 0; ; decided++)
        {
            if (decided > 0)
            {
                // A block's period ended before the request was admitted: its shares went back, decide again on live blocks.
                if (decided > MaxExpiredDecisions)
                {
                    return new RefusedPolicyLease(_blockLayers[0].Name, $"The blocks' periods ended while the request waited on Redis {MaxExpiredDecisions} times over; try again.", null, serviceWide: false);
                }

                for (int i = 0; i < takes.Keys.Length; i++)
                {
                    takes.Keys[i] = _blockLayers[i].Live(takes.Keys[i]);
                }
            }

            for (int attempt = 0; ; attempt++)
            {
                if (attempt > 0 && _pause.Reason is { } reason)
                {
                    return PausedBy(reason); // a reservation just learned of it
                }

                // Disposed meanwhile: its keys are forgotten, and a block reserved now would be one nobody returns.
                ThrowIfBlocksDisposed();

                if (attempt > 0)
                {
                    // A key the idle sweep forgot meanwhile takes no new block: find the live one.
                    for (int i = 0; i < takes.Keys.Length; i++)
                    {
                        takes.Keys[i] = _blockLayers[i].Live(takes.Keys[i]);
                    }
                }

                int needs = TakeLocal(takes, out answer);
                if (answer is not null)
                {
                    return answer;
                }

                if (needs < 0)
                {
                    break;
                }

                if (attempt == MaxLocalAttempts)
                {
                    return new RefusedPolicyLease(_blockLayers[needs].Name, $"Concurrent requests on this node took every reserved permit of layer '{_blockLayers[needs].Name}' {MaxLocalAttempts} times over; try again.", null, serviceWide: false);
                }

                if (!_breaker.MayCall(out long probe))
                {
                    return Unavailable(estimate);
                }

                Task refill;
                bool sent;
                try
                {
                    refill = RefillFrom(takes, needs, out sent);
                }
                catch
                {
                    _breaker.ReleaseProbe(probe); // a clock that threw before anything was sent
                    throw;
                }

                try
                {
                    await refill.WaitAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    RedisTasks.Observe(refill);
                    _breaker.ReleaseProbe(probe);
                    throw;
                }
                catch (RedisServerException error) when (RedisBreaker.IsScriptError(error))
                {
                    _breaker.ReleaseProbeUnlessSent(sent, probe);
                    throw RedisBreaker.ScriptFailed("policy", error); // the reservation closed the breaker for the answer
                }
                catch (Exception error) when (error is RedisException or TimeoutException)
                {
                    return Failed(error.Message, estimate);
                }
                catch (Exception)
                {
                    _breaker.ReleaseProbe(probe); // an error of another kind (a disposed connection): nothing closes or trips for it
                    throw;
                }

                // No close here: the reservations' answer closed the breaker if nothing tripped it since they were sent.
                _breaker.ReleaseProbeUnlessSent(sent, probe);
            }

            if (TakenFromEndedBlock(takes))
            {
                continue;
            }

            if (_remote is null)
            {
                PrefetchLow(takes);
                return new HybridPolicyLease<TContext>(this, takes, remote: null, estimate, UsageOf(takes, remote: null));
            }

            // Every block-served layer holds its share: the others are one script call, and a refusal there gives the shares back.
            PolicyLease remote;
            try
            {
                remote = await _remote.AcquireAsync(context, estimate, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                GiveBack(takes, takes.Amounts);
                throw;
            }

            if (!remote.IsAcquired)
            {
                // The refusal reports every layer's usage, the block layers' as their blocks show it once their shares are back.
                GiveBack(takes, takes.Amounts);
                LayerUsage[]? usage = UsageOf(takes, remote.UsageAtDecision);
                return usage is null ? remote : new RefusedPolicyLease(remote.BlockingLayer!, remote.Reason!, remote.RetryAfter, remote.IsServiceWide, remote.IsPermanentRefusal) { AtLeast = remote.MinimumRetryAfter, UsageAtDecision = usage };
            }

            // Past the per-request layers' admission, a clock that throws would leave an admission nobody holds (its
            // concurrency slot held until its lease timed out): the remote part is rolled back before the exception goes on.
            // (Shares not yet given back stay taken: counted on Redis, unused until their period ends; stricter.)
            try
            {
                // The wait on Redis may have outlasted a block's period (the permits are used from now on, when it has ended).
                if (!TakenFromEndedBlock(takes))
                {
                    // Only now, when the keys are final: a retry above may replace a key the background refill would be sized for.
                    PrefetchLow(takes);
                    return new HybridPolicyLease<TContext>(this, takes, remote, estimate, UsageOf(takes, remote.UsageAtDecision));
                }
            }
            catch
            {
                RedisTasks.Observe(RollBackQuietly(remote));
                throw;
            }

            await RollBackQuietly(remote).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Whether a block a share was taken from has ended by now: the request's permits are used once it is admitted, and a
    /// block's permits count on Redis only until its period ends, so every share must still be live at the admission, not
    /// only at its own take (the other layers' takes, and the per-request layers' script, come in between). If one has
    /// ended, every share goes back (into live blocks, or to Redis while their periods count) and the caller decides again.
    /// </summary>
    private bool TakenFromEndedBlock(LocalTakes takes)
    {
        long now = _blockClock.GetTimestamp();
        foreach (LocalBlock? from in takes.From)
        {
            if (from is not null && now >= from.ExpiresAt)
            {
                GiveBack(takes, takes.Amounts);
                Array.Clear(takes.From);
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Undoes the per-request layers' admission of a request decided again: what they took is given back, their slots
    /// released. If Redis fails meanwhile, what they took stays counted (stricter, never looser).
    /// </summary>
    private static async Task RollBackQuietly(PolicyLease remote)
    {
        if (remote is not RedisPolicyLease<TContext> exact)
        {
            remote.Dispose(); // a failure mode's lease (FailOpen) holds nothing on Redis
            return;
        }

        try
        {
            await exact.RollBackAsync().ConfigureAwait(false);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            // Left counted: the request is decided again either way.
        }
    }

    /// <summary>The hybrid mode's bounded synchronous acquire: the async one, waited for at most the sync timeout.</summary>
    /// <remarks>
    /// The async acquire goes on after each answer on a pool thread. On a pool starved by blocked callers that may come
    /// after the bound though Redis answered in time, so a timeout trips the breaker only when a call this acquire sent is
    /// unanswered (or none was traced: it joined another request's reservation); otherwise the request alone is refused.
    /// </remarks>
    private PolicyLease AcquireHybrid(TContext context, RequestCost estimate)
    {
        using var giveUp = new CancellationTokenSource();
        var sent = new SentCalls();
        Task<PolicyLease> task;
        SentCalls? outer = s_sentCalls.Value;
        s_sentCalls.Value = sent; // flows into the acquire's continuations, and into the calls they send
        try
        {
            task = AcquireHybridAsync(context, estimate, giveUp.Token).AsTask();
        }
        finally
        {
            s_sentCalls.Value = outer;
        }

        long waitFrom = Stopwatch.GetTimestamp(); // what was sent before this was on the wire for the whole wait

        if (task.IsCompleted || ((IAsyncResult)task).AsyncWaitHandle.WaitOne(_syncTimeout))
        {
            return task.GetAwaiter().GetResult();
        }

        giveUp.Cancel();
        RedisTasks.Observe(task); // its own failure (a late script error, a dispose meanwhile) is read, not left unobserved
        RedisTasks.Observe(task.ContinueWith(
            static done => done.IsCompletedSuccessfully && done.Result is HybridPolicyLease<TContext> orphan ? orphan.RollBackAsync() : Task.CompletedTask,
            CancellationToken.None,
            TaskContinuationOptions.None,
            TaskScheduler.Default).Unwrap());
        if (!sent.ShowOutage(waitFrom))
        {
            return new RefusedPolicyLease(UnavailableLayer, $"Redis answered, but this node did not finish the request within the {_syncTimeout.TotalMilliseconds:F0} ms bound (its thread pool is busy); try again, or acquire asynchronously.", null, serviceWide: true);
        }

        return Failed($"Redis did not answer within {_syncTimeout.TotalMilliseconds:F0} ms.", estimate);
    }

    /// <summary>The script calls sent on a synchronous acquire's flow (see <see cref="AcquireHybrid"/>).</summary>
    private static readonly AsyncLocal<SentCalls?> s_sentCalls = new();

    /// <summary>Notes a call sent at <paramref name="sentAt"/> (<see cref="Stopwatch"/> time) on the current flow's trace, if a synchronous acquire keeps one.</summary>
    private static void Trace(Task call, long sentAt) => s_sentCalls.Value?.Add(call, sentAt);

    /// <summary>The calls one synchronous acquire sent or waited for, and whether they show that Redis is away.</summary>
    private sealed class SentCalls
    {
        private readonly List<(Task Call, long SentAt)> _calls = [];

        public void Add(Task call, long sentAt)
        {
            lock (_calls)
            {
                _calls.Add((call, sentAt));
            }
        }

        /// <summary>
        /// Whether a call was on the wire for the whole wait that began at <paramref name="waitFrom"/> and is unanswered, or
        /// failed as Redis fails (a script error is an answer). Nothing traced (the acquire joined a reservation another
        /// request has yet to send), or only calls sent during the wait, prove nothing: the pool may have run them late.
        /// </summary>
        public bool ShowOutage(long waitFrom)
        {
            lock (_calls)
            {
                foreach ((Task call, long sentAt) in _calls)
                {
                    if (call.IsCompleted ? FailedAsRedisFails(call) : sentAt <= waitFrom)
                    {
                        return true;
                    }
                }

                return false;
            }
        }

        private static bool FailedAsRedisFails(Task call) => call.Exception?.InnerException switch
        {
            RedisServerException script when RedisBreaker.IsScriptError(script) => false, // an answer
            RedisException or TimeoutException => true,
            _ => false,
        };
    }

    /// <summary>The hybrid mode without waiting: decided here when every layer is block-served and its blocks can answer.</summary>
    private bool TryAcquireHybrid(TContext context, RequestCost estimate, out PolicyLease? lease)
    {
        lease = null;
        if (_pause.Reason is not null)
        {
            return false; // paused as this node last heard: AcquireAsync asks the switch itself
        }

        LocalTakes? takes = PrepareLocal(context, estimate, out lease);
        if (takes is null)
        {
            return true;
        }

        if (_remote is not null)
        {
            return false; // a script call decides the other layers: AcquireAsync
        }

        int needs = TakeLocal(takes, out lease);
        if (lease is not null)
        {
            return true;
        }

        if (needs >= 0 || TakenFromEndedBlock(takes))
        {
            return false; // a reservation is needed (or a block ended between the takes): AcquireAsync decides
        }

        PrefetchLow(takes);
        lease = new HybridPolicyLease<TContext>(this, takes, remote: null, estimate, UsageOf(takes, remote: null));
        return true;
    }

    /// <summary>
    /// Disposed, or a combination over a policy that was (its layers' reservations are disposed: every block that lands
    /// in them goes straight back, so a request would reserve and return until it gave up).
    /// </summary>
    private void ThrowIfBlocksDisposed() =>
        ObjectDisposedException.ThrowIf(_disposed || Array.Exists(_blockLayers, layer => layer.Blocks!.IsDisposed), this);

    /// <summary>
    /// The block-served layers' keys, limits and amounts for a request (user code runs here), or a refusal: no limit for the
    /// request's tier, a cost above a cap.
    /// </summary>
    private LocalTakes? PrepareLocal(TContext context, RequestCost estimate, out PolicyLease? refusal)
    {
        ThrowIfBlocksDisposed();
        RedisPolicyLease<TContext>.ThrowIfNotExact(estimate, nameof(estimate));
        var keys = new LayerKey[_blockLayers.Length];
        var amounts = new long[_blockLayers.Length];
        var limits = new long[_blockLayers.Length];
        while (true)
        {
            // Every limit of one tiers version, as the exact mode's Prepare reads them (see TiersVersion).
            long version = StableTiersVersion(_blockLayers);
            refusal = null;
            for (int i = 0; i < _blockLayers.Length && refusal is null; i++)
            {
                RedisPolicyLayer<TContext> layer = _blockLayers[i];
                long amount = layer.AmountOf(estimate);
                if (layer.LimitFor(context, amount, out refusal) is not { } limit)
                {
                    continue;
                }

                LayerKey key = layer.BlockKeyOf(context);

                if (amount > Volatile.Read(ref key.Unit))
                {
                    Volatile.Write(ref key.Unit, amount); // blocks are sized in requests of the largest size seen
                }

                keys[i] = key;
                amounts[i] = amount;
                limits[i] = limit;
            }

            if (CurrentTiersVersion(_blockLayers) == version)
            {
                return refusal is null ? new LocalTakes(keys, amounts, limits) : null;
            }
        }
    }

    /// <summary>
    /// Takes every block-served layer's amount from its key's block, all or nothing: -1 when all are taken; otherwise what
    /// was taken is given back, and either <paramref name="refusal"/> is a cached refusal (the longest retry among the
    /// layers that hold one) or the index of the first layer that needs a reservation is returned.
    /// </summary>
    private int TakeLocal(LocalTakes takes, out PolicyLease? refusal)
    {
        refusal = null;
        for (int i = 0; i < takes.Keys.Length; i++)
        {
            LayerKey key = takes.Keys[i];
            long cap = takes.Limits[i];
            LocalReservations<LayerKey> blocks = _blockLayers[i].Blocks!;
            RetireIfTierChanged(i, key, cap);
            LocalBlock? taken = blocks.TryTake(key, takes.Amounts[i], out TimeSpan? refusedFor, cap);
            if (taken is not null && taken.Limit > cap)
            {
                // Granted under a higher cap than this request's (another tier's request, or the tier was lowered since):
                // its permits may exceed this request's cap. (One granted under a lower cap serves it: Redis counted
                // everything held then, this block's permits too, within that lower cap.)
                blocks.GiveBack(key, taken, takes.Amounts[i]);
                RetireIfTierChanged(i, key, cap);
                taken = null;
            }

            if (taken is null)
            {
                GiveBack(takes, takes.Amounts);
                Array.Clear(takes.From);
                if (refusedFor is { } retryAfter)
                {
                    refusal = CachedRefusal(takes, i, retryAfter);
                }

                return i;
            }

            takes.From[i] = taken;
        }

        return -1;
    }

    /// <summary>
    /// A block granted under another cap than <paramref name="limit"/>, the request's: one granted under a higher cap is
    /// given back (its permits may exceed the lower one), and a refusal cached under a lower one is forgotten (the higher
    /// may admit). The key's next reservation asks under the request's cap.
    /// </summary>
    private void RetireIfTierChanged(int index, LayerKey key, long limit)
    {
        if (Volatile.Read(ref key.Limit) != limit)
        {
            Volatile.Write(ref key.Limit, limit);
        }

        LocalBlock block = Volatile.Read(ref key.Block);
        if (block.Limit == limit || ReferenceEquals(block, LocalBlock.Empty) || (block.Refused ? block.Limit > limit : block.Limit < limit))
        {
            return;
        }

        if (Interlocked.CompareExchange(ref key.Block, LocalBlock.Empty, block) == block)
        {
            long leftover = block.TakeAll();
            // Even past the block's end: a counter's segment still counts for the rest of its window, and the script takes
            // back only what still counts.
            if (leftover > 0 && !_breaker.IsOpen)
            {
                RedisTasks.Observe(GiveBackToRedis(_blockLayers[index], key, block.Period, leftover));
            }
        }
    }

    /// <summary>The refusal of layer <paramref name="first"/>'s cached refusal, with the longest retry of the later layers that hold one.</summary>
    private RefusedPolicyLease CachedRefusal(LocalTakes takes, int first, TimeSpan retryAfter)
    {
        bool serviceWide = _blockLayers[first].Rule.IsServiceWide;
        long now = _blockClock.GetTimestamp();
        for (int j = first + 1; j < takes.Keys.Length; j++)
        {
            LocalBlock block = Volatile.Read(ref takes.Keys[j].Block);
            // As a take would judge it: a refusal cached under a lower tier's cap does not bind this request.
            if (block.Refused && now < block.ExpiresAt && Math.Max(takes.Amounts[j], 1) >= block.RefusedNeed && block.Limit >= takes.Limits[j])
            {
                TimeSpan later = _blockClock.GetElapsedTime(now, block.RetryAt);
                retryAfter = later > retryAfter ? later : retryAfter;
                serviceWide |= _blockLayers[j].Rule.IsServiceWide;
            }
        }

        return new RefusedPolicyLease(_blockLayers[first].Name, _blockLayers[first].Reason, retryAfter, serviceWide);
    }

    /// <summary>
    /// Every layer's usage as this node sees it at the decision, for response headers without a call: a block-served layer
    /// shows Redis's count at its block's grant less what this node has not used of it; the others what their script said.
    /// Null when a layer's is unknown.
    /// </summary>
    private LayerUsage[]? UsageOf(LocalTakes takes, IReadOnlyList<LayerUsage>? remote)
    {
        if (_remote is not null && remote is null)
        {
            return null;
        }

        var usage = new LayerUsage[_layers.Length];
        long now = _blockClock.GetTimestamp();
        int local = 0;
        int other = 0;
        for (int i = 0; i < _layers.Length; i++)
        {
            if (_layers[i].IsBlockServed)
            {
                // The key's block now, if live (a refill may have replaced the one taken from, merging its leftover).
                LocalBlock block = Volatile.Read(ref takes.Keys[local].Block);
                if (block.Refused || now >= block.ExpiresAt)
                {
                    block = takes.From[local]!;
                }

                long used = Math.Max(0, block.UsedAtGrant - Volatile.Read(ref block.Remaining));
                TimeSpan reset = now < block.PeriodEndsAt ? _blockClock.GetElapsedTime(now, block.PeriodEndsAt) : TimeSpan.Zero; // the period's end, not the block's
                usage[i] = new LayerUsage(_layers[i].Name, takes.Limits[local], used, reset);
                local++;
            }
            else
            {
                usage[i] = remote![other++];
            }
        }

        return usage;
    }

    /// <summary>
    /// Waits for the reservations in flight for the request's keys (hybrid mode), so that the usage read next and the
    /// unused permits subtracted from it see the same block. Concurrent acquires may still start one: usage is a snapshot.
    /// </summary>
    private Task ReservationsSettled(TContext context)
    {
        if (!_hybrid)
        {
            return Task.CompletedTask;
        }

        List<Task>? waits = null;
        foreach (RedisPolicyLayer<TContext> layer in _blockLayers)
        {
            if (layer.Blocks!.Find(layer.PartitionKeyOf(context)) is { Refill: { IsCompleted: false } } key)
            {
                (waits ??= []).Add(LocalReservations<LayerKey>.WhenSettled(key));
            }
        }

        return waits is null ? Task.CompletedTask : Task.WhenAll(waits);
    }

    /// <summary>Less what this node holds unused in live blocks: reserved on Redis, not used.</summary>
    private long UnusedHere(RedisPolicyLayer<TContext> layer, TContext context)
    {
        if (!_hybrid || !layer.IsBlockServed || layer.Blocks!.Find(layer.PartitionKeyOf(context)) is not { } key)
        {
            return 0;
        }

        LocalBlock block = Volatile.Read(ref key.Block);
        return block.ServesAt(_blockClock.GetTimestamp()) ? Volatile.Read(ref block.Remaining) : 0;
    }

    /// <summary>
    /// One reservation for a key of a block-served layer (a background refill: a debt's, an idle key's, a dispose's), its
    /// call published on the key as a batch's is (see <see cref="Publish(LocalReservations{LayerKey}.Ticket, Task{RedisResult})"/>).
    /// </summary>
    private async Task<Reservation> Reserve(RedisPolicyLayer<TContext> layer, LocalReservations<LayerKey>.Ticket ticket) =>
        (await Reserve([(layer, ticket.Key, ticket.Ask, ticket.Want)], call => Publish(ticket, call)).ConfigureAwait(false))[0];

    /// <summary>
    /// Reservations for several keys of block-served layers in one script call (every key of a policy shares one hash tag),
    /// each key's debt counted first. The answers come in the order of <paramref name="asks"/>.
    /// </summary>
    private async Task<Reservation[]> Reserve(IReadOnlyList<(RedisPolicyLayer<TContext> Layer, LayerKey Key, long Need, long Want)> asks, Action<Task<RedisResult>>? onSent = null)
    {
        var keys = new RedisKey[asks.Count + 1];
        keys[asks.Count] = _pauseKey;
        var values = new RedisValue[2 + (asks.Count * PolicyScripts.Stride)];
        var limits = new long[asks.Count];
        var debts = new long[asks.Count];
        long clientNow = ClientMicroseconds();
        values[0] = _clientClock is null ? -1 : clientNow;
        var wants = new System.Text.StringBuilder();
        for (int i = 0; i < asks.Count; i++)
        {
            (RedisPolicyLayer<TContext> layer, LayerKey key, long need, long want) = asks[i];
            keys[i] = key.RedisKey;
            limits[i] = Volatile.Read(ref key.Limit);
            debts[i] = Interlocked.Exchange(ref key.Debt, 0);
            wants.Append(CultureInfo.InvariantCulture, $"{need}:{Math.Min(want, RedisPolicyLayer<TContext>.MaxAmount)}:{debts[i]};");
            layer.WriteArguments(values, 2 + (i * PolicyScripts.Stride), limits[i], amount: 0, tag: 0, clientNow);
        }

        values[1] = wants.ToString();
        RedisResult[] reply;
        long pauseTicket = _pause.Ticket();
        long failures = FailureMark;
        try
        {
            reply = (RedisResult[])(await Eval(PolicyScripts.Reserve, keys, values, onSent).ConfigureAwait(false))!;
        }
        catch (Exception error)
        {
            if (error is RedisServerException script && RedisBreaker.IsScriptError(script))
            {
                CloseUnlessTrippedSince(failures); // an answer all the same: not an outage
            }

            // Owed still (if the script ran and only its reply was lost, it is counted twice: stricter, never looser).
            for (int i = 0; i < asks.Count; i++)
            {
                if (debts[i] > 0)
                {
                    // A forgotten key's debt would never be sent: it goes to the key's live state.
                    AddDebt(asks[i].Layer, asks[i].Key, debts[i]);
                }
            }

            throw;
        }

        // Redis answered: closed, whether a request waited for these reservations or they refilled blocks in the background
        // (busy keys refilled in the background never wait, and a breaker left open would keep the policy degraded), unless
        // it tripped after they were sent.
        CloseUnlessTrippedSince(failures);
        string paused = (string?)reply[^1] ?? string.Empty;
        _pause.Observe(pauseTicket, paused.Length > 0 ? paused : null);
        var answers = new Reservation[asks.Count];
        for (int i = 0; i < asks.Count; i++)
        {
            // An overrun made while this call was on the wire is paid from the grant when it is installed, if its period
            // still lasts (LayerKey.PayFromGrant).
            answers[i] = new Reservation((long)reply[5 * i], (long)reply[(5 * i) + 1], (long)reply[(5 * i) + 2], (long)reply[(5 * i) + 3], Used: (long)reply[(5 * i) + 4], Limit: limits[i]);
        }

        return answers;
    }

    /// <summary>
    /// Begins a reservation for layer <paramref name="first"/>'s key and for every later block layer whose block cannot
    /// take the request, and sends them in one call: a request on cold keys waits for one round trip, not one per layer.
    /// Completes when every key has its block (or refusal). <paramref name="sent"/> says whether this caller sent anything:
    /// one that only joined reservations in flight did not use a half-open probe it holds.
    /// </summary>
    private Task RefillFrom(LocalTakes takes, int first, out bool sent)
    {
        sent = false;
        List<(RedisPolicyLayer<TContext> Layer, LocalReservations<LayerKey>.Ticket Ticket)>? batch = null;
        Task<LocalBlock>? only = null;
        List<Task>? waits = null;
        long now = _blockClock.GetTimestamp();
        try
        {
            for (int j = first; j < takes.Keys.Length; j++)
            {
                LayerKey key = takes.Keys[j];
                long amount = Math.Max(takes.Amounts[j], 1);
                LocalBlock block = Volatile.Read(ref key.Block);
                bool answers = now < block.ExpiresAt && (block.Refused ? amount >= block.RefusedNeed : Volatile.Read(ref block.Remaining) >= amount);
                if (j > first && answers)
                {
                    continue;
                }

                // The cap the key's next reservation asks under: this request's, unless a request of another tier sets its
                // own before the call is sent (then this one may not use the block, and asks again).
                Volatile.Write(ref key.Limit, takes.Limits[j]);
                if (_blockLayers[j].Blocks!.Begin(key, amount, out Task<LocalBlock> refill) is { } ticket)
                {
                    (batch ??= []).Add((_blockLayers[j], ticket));
                }
                else
                {
                    // Joined: a background refill still queued on a busy pool is sent from here, and a reservation on the wire
                    // is traced, since its answer is what this request waits for (see AcquireHybrid).
                    // Not counted as sent: its answer closes the breaker of the policy whose blocks these are, which in a
                    // combination is not always this one, and a probe kept for it would leave this breaker half-open.
                    if (Volatile.Read(ref key.OnTheWire) is QueuedPrefetch prefetch && prefetch.Holds(refill))
                    {
                        SendQueuedPrefetch(prefetch, j, amount);
                    }
                    else
                    {
                        _blockLayers[j].Blocks!.TrySendQueued(key, refill, amount);
                    }

                    if (Volatile.Read(ref key.OnTheWire) is LocalReservations<LayerKey>.Ticket { Answer: { } call } onTheWire
                        && ReferenceEquals(onTheWire.Completion.Task, refill))
                    {
                        Trace(call, onTheWire.SentAt);
                    }
                }

                if (only is null)
                {
                    only = refill;
                }
                else
                {
                    (waits ??= [only]).Add(refill);
                }
            }
        }
        catch (Exception error) when (batch is not null)
        {
            // A clock that threw while a later key's reservation was sized: the ones claimed before it would never be sent,
            // and every caller of those keys would wait on them for good.
            foreach ((_, LocalReservations<LayerKey>.Ticket ticket) in batch)
            {
                LocalReservations<LayerKey>.Fail(ticket, error);
            }

            throw;
        }

        sent = batch is not null;
        if (batch is not null)
        {
            // Serves every caller of these keys, not this one's context.
            RedisTasks.Observe(RedisTasks.WithoutFlow(static state => state.Self.SendReservations(state.Batch), (Self: this, Batch: batch)));
        }

        return waits is null ? only! : Task.WhenAll(waits);
    }

    /// <summary>
    /// After a request's takes: when a block is below half, its next one is reserved in the background, together with the
    /// request's other blocks below three quarters, in one call (they run low together, since each request takes from each).
    /// </summary>
    private void PrefetchLow(LocalTakes takes)
    {
        bool low = false;
        for (int j = 0; j < takes.Keys.Length && !low; j++)
        {
            LocalBlock block = takes.From[j]!;
            low = Volatile.Read(ref block.Remaining) * 2 < block.Granted && _blockLayers[j].Blocks!.MayPrefetch(takes.Keys[j], block);
        }

        if (!low)
        {
            return;
        }

        // Which layers qualify is decided before any is claimed: MayPrefetch may read a clock (an open breaker's), and one
        // that threw after a claim would leave that refill in flight for good, every caller of its key waiting on it.
        Span<bool> qualifies = stackalloc bool[takes.Keys.Length];
        for (int j = 0; j < takes.Keys.Length; j++)
        {
            LocalBlock block = takes.From[j]!;
            qualifies[j] = Volatile.Read(ref block.Remaining) * 4 < block.Granted * 3 && ReferenceEquals(Volatile.Read(ref takes.Keys[j].Block), block)
                && _blockLayers[j].Blocks!.MayPrefetch(takes.Keys[j], block);
        }

        // Claimed here (so other callers see them in flight and queue nothing); sized and sent by the pool, without the
        // caller's execution context or a clock reading on its time.
        List<(int Layer, TaskCompletionSource<LocalBlock> Completion)>? claimed = null;
        for (int j = 0; j < takes.Keys.Length; j++)
        {
            if (qualifies[j] && LocalReservations<LayerKey>.Claim(takes.Keys[j], out _) is { } completion)
            {
                (claimed ??= []).Add((j, completion));
            }
        }

        if (claimed is not null)
        {
            var queued = new QueuedPrefetch(this, takes.Keys, claimed);
            foreach ((int layer, _) in claimed)
            {
                Volatile.Write(ref takes.Keys[layer].OnTheWire, queued); // a request blocked on one may send them first
            }

            queued.Arm(); // only now: sent before every key shows it, a key written after would keep the spent prefetch

            if (!HoldPrefetches)
            {
                ThreadPool.UnsafeQueueUserWorkItem(queued, preferLocal: false);
            }
        }
    }

    /// <summary>Tests: low-block prefetches are claimed and never queued, as on a pool too starved to run them.</summary>
    internal bool HoldPrefetches { get; set; }

    /// <summary>Sends a queued prefetch from a request's thread, without the request's execution context.</summary>
    private static void SendQueuedPrefetch(QueuedPrefetch prefetch, int joinedLayer, long need) =>
        RedisTasks.WithoutFlow(static state => state.Prefetch.TrySend(state.JoinedLayer, state.Need), (Prefetch: prefetch, JoinedLayer: joinedLayer, Need: need));

    /// <summary>
    /// A request's low blocks queued for one reservation on the pool: sent by the pool, or first by a request that joins one
    /// of them (on a starved pool the work item may wait there past that request's bound, with nothing on the wire).
    /// </summary>
    private sealed class QueuedPrefetch(RedisRatePolicy<TContext> owner, LayerKey[] keys, List<(int Layer, TaskCompletionSource<LocalBlock> Completion)> claimed)
        : IThreadPoolWorkItem
    {
        private int _taken;
        private volatile bool _armed;

        /// <summary>Every claimed key shows the prefetch: a request that joins one may send it from here on.</summary>
        public void Arm() => _armed = true;

        /// <summary>Whether <paramref name="refill"/> is one of the refills this prefetch claimed.</summary>
        public bool Holds(Task<LocalBlock> refill)
        {
            foreach ((_, TaskCompletionSource<LocalBlock> completion) in claimed)
            {
                if (ReferenceEquals(completion.Task, refill))
                {
                    return true;
                }
            }

            return false;
        }

        /// <summary>
        /// Sizes and sends the claimed refills unless another thread did; a request that joined layer
        /// <paramref name="joinedLayer"/> sizes that one for its own <paramref name="need"/>.
        /// </summary>
        public void TrySend(int joinedLayer = -1, long need = 0)
        {
            if ((joinedLayer >= 0 && !_armed) || Interlocked.Exchange(ref _taken, 1) != 0)
            {
                return;
            }

            foreach ((int layer, _) in claimed)
            {
                Interlocked.CompareExchange(ref keys[layer].OnTheWire, null, this);
            }

            owner.SendPrefetch(keys, claimed, joinedLayer, need);
        }

        public void Execute() => TrySend();
    }

    private void SendPrefetch(LayerKey[] keys, List<(int Layer, TaskCompletionSource<LocalBlock> Completion)> claimed, int joinedLayer = -1, long need = 0)
    {
        List<(RedisPolicyLayer<TContext> Layer, LocalReservations<LayerKey>.Ticket Ticket)> batch;
        try
        {
            batch = [.. claimed.Select(item => (_blockLayers[item.Layer], _blockLayers[item.Layer].Blocks!.Size(keys[item.Layer], item.Layer == joinedLayer ? need : 0, item.Completion)))];
        }
        catch (Exception error)
        {
            // On the pool there is nobody to throw to (an exception would end the process): a clock that threw while they
            // were sized fails every refill claimed here, sized or not, so their keys can claim others.
            foreach ((int layer, TaskCompletionSource<LocalBlock> completion) in claimed)
            {
                LocalReservations<LayerKey>.Fail(keys[layer], completion, error);
            }

            return;
        }

        RedisTasks.Observe(SendReservations(batch));
    }

    private async Task SendReservations(List<(RedisPolicyLayer<TContext> Layer, LocalReservations<LayerKey>.Ticket Ticket)> batch)
    {
        Reservation[] answers;
        try
        {
            answers = await Reserve([.. batch.Select(item => (item.Layer, item.Ticket.Key, item.Ticket.Ask, item.Ticket.Want))], call => Publish(batch, call)).ConfigureAwait(false);
        }
        catch (Exception error)
        {
            foreach ((_, LocalReservations<LayerKey>.Ticket ticket) in batch)
            {
                LocalReservations<LayerKey>.Fail(ticket, error);
            }

            return;
        }

        for (int i = 0; i < batch.Count; i++)
        {
            batch[i].Layer.Blocks!.Finish(batch[i].Ticket, answers[i]);
        }
    }

    /// <summary>Puts the batch's call on each of its keys, for a sync acquire that joins one of them to trace (see <see cref="AcquireHybrid"/>).</summary>
    private static void Publish(List<(RedisPolicyLayer<TContext> Layer, LocalReservations<LayerKey>.Ticket Ticket)> batch, Task<RedisResult> call)
    {
        foreach ((_, LocalReservations<LayerKey>.Ticket ticket) in batch)
        {
            Publish(ticket, call);
        }
    }

    private static void Publish(LocalReservations<LayerKey>.Ticket ticket, Task<RedisResult> call)
    {
        ticket.SentAt = Stopwatch.GetTimestamp();
        ticket.Answer = call;
        Volatile.Write(ref ticket.Key.OnTheWire, ticket);
    }

    /// <summary>Gives back a block's unused permits, counted in <paramref name="period"/>, while that period counts them.</summary>
    private Task GiveBackToRedis(RedisPolicyLayer<TContext> layer, LayerKey key, long period, long returned) =>
        GiveBackToRedis(layer, [(key, period, returned)]);

    /// <summary>Gives back several keys' unused permits of one layer, in calls of at most 256 keys.</summary>
    private async Task GiveBackToRedis(RedisPolicyLayer<TContext> layer, IReadOnlyList<(LayerKey Key, long Period, long Returned)> returns)
    {
        const int PerCall = 256;
        long clientNow = ClientMicroseconds();
        for (int from = 0; from < returns.Count; from += PerCall)
        {
            int count = Math.Min(PerCall, returns.Count - from);
            var keys = new RedisKey[count];
            var values = new RedisValue[2 + (count * PolicyScripts.Stride)];
            values[0] = _clientClock is null ? -1 : clientNow;
            values[1] = string.Empty;
            for (int i = 0; i < count; i++)
            {
                (LayerKey key, long period, long returned) = returns[from + i];
                keys[i] = key.RedisKey;
                layer.WriteArguments(values, 2 + (i * PolicyScripts.Stride), Volatile.Read(ref key.Limit), amount: returned, tag: period, clientNow);
            }

            await Eval(PolicyScripts.Return, keys, values).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads the pause switch, so that every node learns of a pause or a resume within the check interval (the timer's
    /// call), and a paused node learns of a resume at its next request (<paramref name="requested"/>).
    /// </summary>
    private async Task CheckPauseAsync(bool requested = false)
    {
        // A request's read is a request's own call: it takes the half-open probe (one paused request asks, the others keep the
        // pause they know), its answer closes the breaker and its failure trips it, so that the next paused requests do not
        // each wait out the client's timeout. The timer's read is a background call: it skips cool-downs and never trips
        // (see RedisBreaker.IsOpen): one sent before a request's probe closed the breaker would open it again.
        long probe = long.MinValue;
        if (_disposed || (requested ? !_breaker.MayCall(out probe) : _breaker.IsOpen))
        {
            return;
        }

        long failures = FailureMark;
        try
        {
            long ticket = _pause.Ticket();
            Task<RedisValue> read = _database.StringGetAsync(_pauseKey);
            Trace(read, Stopwatch.GetTimestamp());
            RedisValue reason = await read.ConfigureAwait(false);
            _pause.Observe(ticket, reason.HasValue ? (string?)reason : null);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            if (requested)
            {
                Trip(error.Message);
            }

            return;
        }
        catch when (requested)
        {
            _breaker.ReleaseProbe(probe); // not an answer from Redis: the next request may probe
            throw;
        }

        if (requested)
        {
            CloseUnlessTrippedSince(failures);
        }
    }

    /// <summary>
    /// The pause switch as this node knows it, shared by a policy and its combinations. Every read of the switch takes a
    /// ticket before it is sent, and its answer is kept only if no later-sent read (or local Pause/Resume) has been kept
    /// already: answers complete on the thread pool in any order, and a timer's read sent before another node's Resume
    /// must not pause this node again after a fresher read saw the resume.
    /// </summary>
    private sealed class PauseState
    {
        private readonly Lock _gate = new();
        private volatile string? _reason;
        private long _issued;
        private long _kept;

        public string? Reason => _reason;

        /// <summary>A ticket for a read about to be sent (or a switch just set here): later than every ticket before it.</summary>
        public long Ticket() => Interlocked.Increment(ref _issued);

        /// <summary>Keeps what the read with <paramref name="ticket"/> saw, unless a later-sent read was kept already.</summary>
        public void Observe(long ticket, string? reason)
        {
            lock (_gate)
            {
                if (ticket > _kept)
                {
                    _kept = ticket;
                    _reason = reason;
                }
            }
        }
    }
}
