using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.RateLimiting;
using RateEngine.Redis.Scripts;
using StackExchange.Redis;

namespace RateEngine.Redis;

/// <summary>
/// A partitioned limiter whose every decision is one Lua script on Redis (exact mode): the script reads the clock,
/// decides and writes in one atomic step, so the cap holds across every node that shares the server.
/// </summary>
/// <remarks>
/// <para><c>AcquireAsync</c> is the native path. <c>AttemptAcquire</c> runs the same script and blocks its thread at most
/// <see cref="RedisLimiterOptions.SyncTimeout"/>; past it, it answers by the failure mode. Neither queues: a refusal
/// comes back at once with <c>RETRY_AFTER</c>.</para>
/// <para>A call that times out or is cancelled while its script is in flight may still be admitted on the server: its
/// permits then count without a lease (stricter, never looser). A failed call opens the breaker for the cool-down, during
/// which calls answer by the failure mode without touching Redis; the task of a call given up on is observed, so its
/// exception is never left unobserved.</para>
/// </remarks>
internal sealed class RedisPartitionedLimiter<TResource, TOptions> : PartitionedRateLimiter<TResource>
    where TOptions : class
{
    private static readonly long UnixEpochTicks = DateTimeOffset.UnixEpoch.UtcTicks;

    private readonly Func<TResource, string> _keySelector;
    private readonly Func<string, TOptions> _optionsResolver;
    private readonly Func<TOptions, RedisRule> _createRule;
    private readonly ConditionalWeakTable<TOptions, RedisRule> _rules = [];
    private readonly IDatabase _database;
    private readonly string _keyPrefix;
    private readonly TimeProvider? _clientClock;
    private readonly TimeSpan _syncTimeout;
    private readonly RedisFailureMode _failureMode;
    private readonly RedisBreaker _breaker;
    private readonly string _nonce = Guid.NewGuid().ToString("N");
    private long _calls;
    private volatile bool _disposed;

    public RedisPartitionedLimiter(
        Func<TResource, string> keySelector, Func<string, TOptions> optionsResolver, Func<TOptions, RedisRule> createRule, RedisLimiterOptions options)
    {
        ArgumentNullException.ThrowIfNull(keySelector);
        ArgumentNullException.ThrowIfNull(optionsResolver);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _keySelector = keySelector;
        _optionsResolver = optionsResolver;
        _createRule = createRule;
        _database = options.Connection!.GetDatabase(options.Database);
        _keyPrefix = options.KeyPrefix;
        _clientClock = options.ClientClock;
        _syncTimeout = options.SyncTimeout;
        _failureMode = options.FailureMode;
        _breaker = new RedisBreaker(options.TimeProvider, options.FailureCooldown);
    }

    /// <summary>Failed calls so far (tests and diagnostics).</summary>
    internal long Failures => _breaker.Failures;

    /// <summary>
    /// Not tracked: a partition's count lives on the server, and reading it would cost a round trip on a path that must not
    /// block. Returns null.
    /// </summary>
    public override RateLimiterStatistics? GetStatistics(TResource resource) => null;

    /// <summary>The Redis key of a partition: the partition key is the hash tag, so its keys share one cluster slot.</summary>
    internal string KeyOf(string partitionKey, RedisRule rule) => $"{_keyPrefix}:{{{partitionKey}}}:{rule.Suffix}";

    /// <summary>Runs the script for one call: the native path under both acquires (and the tests' view of the decision).</summary>
    internal Task<RedisResult> Evaluate(TResource resource, int permitCount)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(permitCount);
        string partitionKey = _keySelector(resource) ?? throw new InvalidOperationException("The key selector returned null.");
        TOptions options = _optionsResolver(partitionKey) ?? throw new InvalidOperationException($"No options were resolved for key '{partitionKey}'.");
        RedisRule rule = _rules.GetValue(options, created => _createRule(created));
        if (permitCount > rule.PermitLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(permitCount), permitCount, $"{permitCount} permits exceed the limit of {rule.PermitLimit}.");
        }

        long now = _clientClock is null ? -1 : (_clientClock.GetUtcNow().UtcTicks - UnixEpochTicks) / 10;
        string? nonce = rule.NeedsNonce
            ? _nonce + Interlocked.Increment(ref _calls).ToString(CultureInfo.InvariantCulture)
            : null;
        return _database.ScriptEvaluateAsync(rule.Script, rule.Parameters(KeyOf(partitionKey, rule), now, permitCount, nonce));
    }

    internal static RedisDecision Decision(RedisResult result)
    {
        var values = (long[])result!;
        return new RedisDecision(values[0] == 1, values[1], values[2], values[3]);
    }

    protected override RateLimitLease AttemptAcquireCore(TResource resource, int permitCount)
    {
        Task<RedisResult>? task = _breaker.IsOpen ? null : Evaluate(resource, permitCount);
        if (task is null)
        {
            return Unavailable(_breaker.LastFailure);
        }

        try
        {
            if (!task.Wait(_syncTimeout))
            {
                Observe(task);
                return Failed($"Redis did not answer within {_syncTimeout.TotalMilliseconds:F0} ms.");
            }
        }
        catch (AggregateException error) when (error.InnerException is RedisException or TimeoutException)
        {
            return Failed(error.InnerException.Message);
        }

        _breaker.Close();
        return Lease(Decision(task.Result));
    }

    protected override async ValueTask<RateLimitLease> AcquireAsyncCore(TResource resource, int permitCount, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (_breaker.IsOpen)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return Unavailable(_breaker.LastFailure);
        }

        Task<RedisResult> task = Evaluate(resource, permitCount);
        RedisResult result;
        try
        {
            result = await task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            Observe(task);
            throw;
        }
        catch (Exception error) when (error is RedisException or TimeoutException)
        {
            return Failed(error.Message);
        }

        _breaker.Close();
        return Lease(Decision(result));
    }

    protected override void Dispose(bool disposing) => _disposed = true;

    protected override ValueTask DisposeAsyncCore()
    {
        _disposed = true;
        return default;
    }

    private static RateLimitLease Lease(RedisDecision decision) => decision.Admitted
        ? RedisLease.Acquired
        : new RedisLease(false, TimeSpan.FromTicks(decision.RetryAfterMicroseconds * 10), "The limit is reached.");

    private static void Observe(Task task) =>
        task.ContinueWith(static done => _ = done.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    private RateLimitLease Failed(string why)
    {
        _breaker.Trip(why);
        return Unavailable(why);
    }

    private RateLimitLease Unavailable(string why) => _failureMode == RedisFailureMode.FailOpen
        ? new RedisLease(true, null, $"Redis is unavailable ({why}); admitted without a limit (FailOpen).")
        : new RedisLease(false, null, $"Redis is unavailable ({why}); refused (FailClosed).");
}
