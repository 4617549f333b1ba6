using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using RateEngine.Redis.Telemetry;
using StackExchange.Redis;

namespace RateEngine.Redis;

/// <summary>
/// After a failed call, refuses calls for the cool-down, so the limiter stops calling a dead Redis. Then it is half-open:
/// one caller is let through as the probe, and the others are refused for another cool-down while it runs, so that an
/// outage costs one call per cool-down rather than a wave of callers each waiting out the client's timeout. The probe's
/// success closes the breaker; its failure opens it again. Reports each change of state once (degraded, recovered).
/// </summary>
internal sealed class RedisBreaker(TimeProvider time, TimeSpan cooldown, Action<string> onDegraded, Action<long> onRecovered, Action? onRetired = null)
{
    private long _openUntil = long.MinValue;

    /// <summary>The cool-down the last half-open probe claimed (what <see cref="ReleaseProbe"/> may give back).</summary>
    private long _claimedUntil = long.MinValue;
    private long _failures;
    private int _degraded;

    /// <summary>The owner was disposed: its state changes are no longer reported (see <see cref="Retire"/>).</summary>
    private bool _retired;

    /// <summary>Orders trips and closes: a close must not undo a trip it raced (open, but reported healthy).</summary>
    private readonly Lock _transitions = new();

    /// <summary>The breaker of a limiter or policy made with <paramref name="options"/>: logs and meters each change of state once.</summary>
    public static RedisBreaker Create(RedisLimiterOptions options, RedisMetrics metrics)
    {
        ILogger logger = options.LoggerFactory?.CreateLogger("RateEngine.Redis") ?? NullLogger.Instance;
        string prefix = options.KeyPrefix;
        RedisFailureMode failureMode = options.FailureMode;
        TimeSpan cooldown = options.FailureCooldown;
        return new RedisBreaker(
            options.TimeProvider,
            cooldown,
            why =>
            {
                metrics.Degraded(true);
                Log.RedisUnavailable(logger, prefix, why, failureMode, cooldown);
            },
            failures =>
            {
                metrics.Degraded(false);
                Log.RedisRecovered(logger, prefix, failures);
            },
            () => metrics.Degraded(false));
    }

    /// <summary>Failed calls so far (errors and timeouts).</summary>
    public long Failures => Volatile.Read(ref _failures);

    /// <summary>Why the last call failed, for the refusals the open breaker answers.</summary>
    public string LastFailure { get; private set; } = string.Empty;

    /// <summary>
    /// Open: a call failed within the cool-down, or the half-open probe claimed one (its call is under way). For calls in
    /// the background (returns, refills nobody waits for, sweeps, the pause check), which do not take the probe: a failure
    /// of theirs does not trip the breaker, and only a hybrid reservation's or a lease's settle's answer closes it, unless
    /// it tripped after the call was sent (<see cref="CloseUnlessTrippedSince"/>; a rollback of an acquire given up on never
    /// does), so a probe they took could leave it open after Redis is back. A closed breaker answers without reading the clock.
    /// </summary>
    public bool IsOpen => Volatile.Read(ref _openUntil) is var until && until != long.MinValue && time.GetTimestamp() < until;

    /// <summary>
    /// Whether the caller may call Redis now: always while closed (without reading the clock: the hybrid hot path asks), never
    /// during a cool-down, and after one for the first caller to ask only (the probe), whose claim starts another cool-down
    /// for everyone else. For a request's own call, whose success closes the breaker and whose failure trips it; ask right
    /// before the call it decides: a caller let through that does not call wastes the probe, and the next one goes a
    /// cool-down later. Background calls ask <see cref="IsOpen"/> instead.
    /// </summary>
    public bool MayCall() => MayCall(out _);

    /// <summary>
    /// <see cref="MayCall()"/>, and the caller's claim when it is the half-open probe (long.MinValue otherwise): what
    /// <see cref="ReleaseProbe"/> takes, so that only the probe's own caller can let the next one through early.
    /// </summary>
    public bool MayCall(out long probe)
    {
        probe = long.MinValue;
        long until = Volatile.Read(ref _openUntil);
        while (until != long.MinValue)
        {
            long now = time.GetTimestamp();
            if (now < until)
            {
                return false;
            }

            // Half-open: the first to move the cool-down on probes; a racing Close (MinValue) lets everyone through.
            long claimed = now + CooldownTicks;
            long seen = Interlocked.CompareExchange(ref _openUntil, claimed, until);
            if (seen == until)
            {
                Volatile.Write(ref _claimedUntil, claimed);
                probe = claimed;
                return true;
            }

            until = seen;
        }

        return true;
    }

    /// <summary>A call has failed and none has succeeded since (the breaker may already let calls through again).</summary>
    public bool IsDegraded => Volatile.Read(ref _degraded) == 1;

    public void Trip(string why)
    {
        lock (_transitions)
        {
            LastFailure = why;
            Interlocked.Increment(ref _failures);
            // Not the probe's any more (cleared first: a release that reads this cool-down then reads no claim).
            Volatile.Write(ref _claimedUntil, long.MinValue);
            Volatile.Write(ref _openUntil, time.GetTimestamp() + CooldownTicks);
            if (!_retired && Interlocked.Exchange(ref _degraded, 1) == 0)
            {
                onDegraded(why);
            }
        }
    }

    /// <summary>
    /// The owner is disposed: a degraded breaker stops counting as one (the degraded meter goes back down, with no recovery
    /// to log), and later failures of its leases' settles are not reported, since no dispose would ever take them back.
    /// </summary>
    public void Retire()
    {
        lock (_transitions)
        {
            _retired = true;
            if (Interlocked.Exchange(ref _degraded, 0) == 1)
            {
                onRetired?.Invoke();
            }
        }
    }

    /// <summary>
    /// A request's call was cancelled before its outcome was known: if it was the half-open probe (<paramref name="probe"/>,
    /// its claim from <see cref="MayCall(out long)"/>, and nothing tripped or closed the breaker since), the next caller probes
    /// at once instead of a cool-down later. Nothing for any other caller: calls sent before a trip and cancelled during the
    /// cool-down (a wave of them, when Redis hangs) would each have let one more call through to the dead server.
    /// </summary>
    public void ReleaseProbe(long probe)
    {
        if (probe != long.MinValue && probe == Volatile.Read(ref _claimedUntil))
        {
            Interlocked.CompareExchange(ref _openUntil, time.GetTimestamp(), probe);
        }
    }

    /// <summary>
    /// <see cref="ReleaseProbe"/> for a caller that sent nothing after all: it only joined a call another caller sent (perhaps
    /// before a trip, whose answer then closes nothing), so the next caller probes now, not a cool-down later.
    /// </summary>
    public void ReleaseProbeUnlessSent(bool sent, long probe)
    {
        if (!sent)
        {
            ReleaseProbe(probe);
        }
    }

    /// <summary>
    /// The health check's probe (see <c>IRedisLimiterHealth.ProbeAsync</c>): only when the cool-down hands this caller the
    /// half-open probe, one write to <paramref name="healthKey"/>; its answer closes the owner's breakers (through
    /// <paramref name="close"/>, with <paramref name="failureMark"/> read before the write), unless a call failed meanwhile.
    /// A write that fails is no proof of an outage (its bound may be shorter than a request's wait; an ACL may refuse the
    /// key), so it trips nothing: the probe goes back, and the next request takes it.
    /// </summary>
    public static async Task ProbeAsync(
        RedisBreaker breaker, Func<long> failureMark, Action<long> close, IDatabase database, string healthKey, TimeSpan bound, CancellationToken cancellationToken)
    {
        if (!breaker.IsDegraded || !breaker.MayCall(out long probe) || probe == long.MinValue)
        {
            return; // closed meanwhile, or no probe due: nothing to find out
        }

        long failures = failureMark();
        try
        {
            await RedisTasks.WriteWithin(database, healthKey, bound, cancellationToken).ConfigureAwait(false);
            close(failures);
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            breaker.ReleaseProbe(probe); // see the summary: no proof of an outage either way
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            breaker.ReleaseProbe(probe);
            throw;
        }
    }

    private long CooldownTicks => (long)(cooldown.TotalSeconds * time.TimestampFrequency);

    /// <summary>
    /// A script error (a bug, a key of another type): Redis answered, so it says nothing about Redis being down. Not one that
    /// Redis 6 and older wrap in "ERR Error running script" when a command inside the script fails for the server's state
    /// (a replica after a failover, memory full, a master down, a dataset loading): those are outages.
    /// </summary>
    public static bool IsScriptError(RedisServerException error) =>
        (error.Message.StartsWith("ERR", StringComparison.Ordinal) || error.Message.StartsWith("WRONGTYPE", StringComparison.Ordinal))
        && !ServerStateErrors.Any(state => error.Message.Contains(state, StringComparison.Ordinal));

    private static readonly string[] ServerStateErrors =
        ["-READONLY", "-OOM", "-MASTERDOWN", "-LOADING", "-BUSY", "-NOREPLICAS", "-MISCONF", "-CLUSTERDOWN", "-TRYAGAIN"];

    /// <summary>
    /// The exception for a script that failed on Redis (a bug, not an outage; see <see cref="IsScriptError"/>): the caller
    /// gets it, not the failure mode's answer. Redis answered, so whoever sent the call closes the breaker for it, as for any
    /// answer (<see cref="CloseUnlessTrippedSince"/>: not if a call failed after it was sent).
    /// </summary>
    /// <param name="owner">What ran the script ("limiter", "policy"), for the message.</param>
    /// <param name="error">Redis's error.</param>
    public static InvalidOperationException ScriptFailed(string owner, RedisServerException error) =>
        new($"The {owner}'s script failed on Redis: {error.Message}", error);

    /// <summary>
    /// Closes the breaker for the answer to a call sent when <see cref="Failures"/> read <paramref name="failuresWhenSent"/>,
    /// unless a call has failed since: a late answer to a call sent before the breaker tripped (Redis slower than the sync
    /// bound) says nothing the trip did not know, and closing on it would send every next caller to wait out the bound again.
    /// </summary>
    /// <returns>False when a call failed since, and the breaker was left as it was.</returns>
    public bool CloseUnlessTrippedSince(long failuresWhenSent)
    {
        // Closed already: nothing to order (the common case, on every successful call).
        if (Volatile.Read(ref _openUntil) == long.MinValue && Volatile.Read(ref _degraded) == 0)
        {
            return true;
        }

        lock (_transitions)
        {
            if (Failures != failuresWhenSent)
            {
                return false;
            }

            Volatile.Write(ref _openUntil, long.MinValue);
            if (Interlocked.Exchange(ref _degraded, 0) == 1)
            {
                onRecovered(Failures);
            }

            return true;
        }
    }
}
