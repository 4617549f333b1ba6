using System.Threading.RateLimiting;
using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Contract;

/// <summary>
/// The <see cref="System.Threading.RateLimiting"/> contract that every RateEngine limiter keeps, written once and run
/// against each limiter (and each replenishment mode) by a derived class.
/// </summary>
/// <remarks>
/// <para>The tests know nothing of the algorithms. They get limiters from <see cref="Create"/>, free every permit taken
/// so far with <see cref="Replenish"/> (automatic limiters advance the fake clock and let the limiter's own timer serve
/// waiters; manual ones also call <c>TryReplenish</c>), and ask <see cref="ExpectedRetryAfter"/> for the one value that
/// differs per algorithm.</para>
/// <para>Time comes only from <see cref="FakeTimeProvider"/>: nothing sleeps. Waiters are completed synchronously by
/// <c>Advance</c> or <c>TryReplenish</c>, so a test checks <c>IsCompleted</c> right after the call that should serve
/// them; awaits carry a timeout only as a guard against a hang.</para>
/// </remarks>
public abstract class RateLimiterContractTests
{
    /// <summary>The window (or replenishment period) every derived factory uses, so that expectations can be computed.</summary>
    protected static readonly TimeSpan Window = TimeSpan.FromSeconds(10);

    /// <summary>A guard for awaits: a correct test never gets near it.</summary>
    protected static readonly TimeSpan GuardTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Less time than any permit needs to return at the limits the tests use (the earliest: a 4-token bucket, 2.5 s).</summary>
    protected static readonly TimeSpan ShortWhile = TimeSpan.FromSeconds(1);

    private const QueueProcessingOrder OldestFirst = QueueProcessingOrder.OldestFirst;
    private const QueueProcessingOrder NewestFirst = QueueProcessingOrder.NewestFirst;

    /// <summary>
    /// A limiter on <paramref name="time"/>, created at the clock's current time, whose window (or period) is
    /// <see cref="Window"/>.
    /// </summary>
    protected abstract ReplenishingRateLimiter Create(int permitLimit, int queueLimit, QueueProcessingOrder order, FakeTimeProvider time);

    /// <summary>
    /// Makes every permit taken so far available again and lets the limiter serve its waiters: advances the clock far
    /// enough and, for manual replenishment, calls <c>TryReplenish</c>. Permits taken by waiters served during the call
    /// stay taken.
    /// </summary>
    protected abstract void Replenish(ReplenishingRateLimiter limiter, FakeTimeProvider time);

    /// <summary>
    /// The <c>RETRY_AFTER</c> of a failed request when all <paramref name="permitLimit"/> permits were taken at once when
    /// the limiter was created, <paramref name="elapsed"/> (less than the time any permit needs to return) has passed
    /// since without any replenishment, and the request needs <paramref name="permits"/> permits free (its own plus those
    /// queued ahead of it): the real time until they would be.
    /// </summary>
    protected abstract TimeSpan ExpectedRetryAfter(int permitLimit, int permits, TimeSpan elapsed);

    /// <summary>What <see cref="ReplenishingRateLimiter.IsAutoReplenishing"/> must report.</summary>
    protected abstract bool ExpectedAutoReplenishing { get; }

    /// <summary>What <see cref="ReplenishingRateLimiter.ReplenishmentPeriod"/> must report.</summary>
    protected abstract TimeSpan ExpectedReplenishmentPeriod { get; }

    /// <summary>The parameter name of the exception for a request above the permit limit.</summary>
    protected virtual string OverLimitParamName => "permitCount";

    /// <summary>The largest permit limit the overflow test uses: int.MaxValue unless the limiter cannot hold that many.</summary>
    protected virtual int LargePermitLimit => int.MaxValue;

    /// <summary>How long after a full limit is taken at once it is all back: how much later each further limit can pass.</summary>
    protected virtual TimeSpan FullRefill => Window;

    // ---------------------------------------------------------------------------------------------------------------
    // Basics

    [Fact]
    public void AttemptAcquire_UpToPermitLimit_SucceedsThenFails()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 0, OldestFirst, time);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        using RateLimitLease rejected = limiter.AttemptAcquire(1);

        Assert.False(rejected.IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_AfterReplenish_SucceedsAgain()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);

        Replenish(limiter, time);

        Assert.Equal(3, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
    }

    [Fact]
    public void AttemptAcquire_NotReplenished_KeepsFailing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        time.Advance(ShortWhile);

        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_WithAvailability_CompletesImmediately()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 1, OldestFirst, time);

        Task<RateLimitLease> acquire = limiter.AcquireAsync(2).AsTask();

        Assert.True(acquire.IsCompletedSuccessfully);
        Assert.True((await acquire).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_WithoutAvailability_WaitsForReplenishment()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Task<RateLimitLease> wait = Enqueue(limiter, 1);
        time.Advance(ShortWhile);
        Assert.False(wait.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(wait)).IsAcquired);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Queue order

    [Fact]
    public async Task AcquireAsync_OldestFirst_ServesOldestWaiterFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> oldest = Enqueue(limiter, 1);
        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Replenish(limiter, time);

        Assert.True((await Completed(oldest)).IsAcquired);
        Assert.False(newest.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_NewestFirst_ServesNewestWaiterFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> oldest = Enqueue(limiter, 1);
        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(oldest.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(oldest)).IsAcquired);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Queue overflow

    [Fact]
    public async Task AcquireAsync_QueueFullOldestFirst_FailsNewRequestAndKeepsWaiters()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);

        Task<RateLimitLease> overflow = limiter.AcquireAsync(1).AsTask();

        Assert.True(overflow.IsCompletedSuccessfully);
        Assert.False((await overflow).IsAcquired);
        Assert.False(first.IsCompleted);
        Assert.False(second.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(2, stats.CurrentQueuedCount);
        Assert.Equal(1, stats.TotalFailedLeases);

        Replenish(limiter, time);

        Assert.True((await Completed(first)).IsAcquired);
        Assert.True((await Completed(second)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_QueueFullNewestFirst_EvictsOldestWaiterWithFailedLease()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> oldest = Enqueue(limiter, 1);
        Task<RateLimitLease> middle = Enqueue(limiter, 1);

        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Assert.False((await Completed(oldest)).IsAcquired);
        Assert.False(middle.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(2, stats.CurrentQueuedCount);
        Assert.Equal(1, stats.TotalFailedLeases);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(middle.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(middle)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_QueueFullNewestFirst_EvictsAsManyOldestWaitersAsNeeded()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 3, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);
        Task<RateLimitLease> third = Enqueue(limiter, 1);

        Task<RateLimitLease> large = Enqueue(limiter, 2);

        Assert.False((await Completed(first)).IsAcquired);
        Assert.False((await Completed(second)).IsAcquired);
        Assert.False(third.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(3, stats.CurrentQueuedCount);
        Assert.Equal(2, stats.TotalFailedLeases);

        Replenish(limiter, time);

        Assert.True((await Completed(large)).IsAcquired);
        Assert.False(third.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(third)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_NewestFirstRequestLargerThanQueueLimit_FailsWithoutEvicting()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 1, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);

        Task<RateLimitLease> tooLarge = limiter.AcquireAsync(2).AsTask();

        Assert.True(tooLarge.IsCompletedSuccessfully);
        Assert.False((await tooLarge).IsAcquired);
        Assert.False(waiter.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(1, stats.CurrentQueuedCount);
        Assert.Equal(1, stats.TotalFailedLeases);
    }

    [Fact]
    public async Task AcquireAsync_QueueFullThenReplenished_AcceptsWaitersAgain()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired);

        Replenish(limiter, time);
        Assert.True((await Completed(first)).IsAcquired);

        Task<RateLimitLease> second = Enqueue(limiter, 1);
        Replenish(limiter, time);

        Assert.True((await Completed(second)).IsAcquired);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Requests that arrive while others wait

    [Fact]
    public void AttemptAcquire_WhileWaitersQueuedOldestFirst_FailsEvenWithAvailablePermits()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        _ = Enqueue(limiter, 3);

        using RateLimitLease lease = limiter.AttemptAcquire(1);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.False(string.IsNullOrWhiteSpace(reason));
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_WhileWaitersQueuedNewestFirst_TakesAvailablePermits()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 3);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.False(waiter.IsCompleted);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_WhileWaitersQueuedOldestFirst_QueuesBehindThem()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> head = Enqueue(limiter, 3);

        Task<RateLimitLease> behind = Enqueue(limiter, 1);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);

        Replenish(limiter, time);

        Assert.True((await Completed(head)).IsAcquired);
        Assert.True((await Completed(behind)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_WhileWaitersQueuedNewestFirst_SucceedsImmediately()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 4, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Task<RateLimitLease> head = Enqueue(limiter, 3);

        Task<RateLimitLease> newcomer = limiter.AcquireAsync(1).AsTask();

        Assert.True(newcomer.IsCompletedSuccessfully);
        Assert.True((await newcomer).IsAcquired);
        Assert.False(head.IsCompleted);
        Assert.Equal(3, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Queue servicing

    [Fact]
    public async Task Replenish_OldestWaiterDoesNotFit_StopsServingOldestFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 5, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 2);
        Task<RateLimitLease> blocked = Enqueue(limiter, 2);
        Task<RateLimitLease> small = Enqueue(limiter, 1);

        Replenish(limiter, time);

        Assert.True((await Completed(first)).IsAcquired);
        Assert.False(blocked.IsCompleted);
        Assert.False(small.IsCompleted); // it would fit, but it is behind a waiter that does not
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(1, stats.CurrentAvailablePermits);
        Assert.Equal(3, stats.CurrentQueuedCount);
    }

    [Fact]
    public async Task Replenish_NewestWaiterDoesNotFit_StopsServingNewestFirst()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 5, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> small = Enqueue(limiter, 1);
        Task<RateLimitLease> blocked = Enqueue(limiter, 2);
        Task<RateLimitLease> newest = Enqueue(limiter, 2);

        Replenish(limiter, time);

        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(blocked.IsCompleted);
        Assert.False(small.IsCompleted);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(1, stats.CurrentAvailablePermits);
        Assert.Equal(3, stats.CurrentQueuedCount);
    }

    [Fact]
    public async Task Replenish_SeveralWaitersFit_ServesThemAllAtOnce()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 3, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        Task<RateLimitLease> one = Enqueue(limiter, 1);
        Task<RateLimitLease> two = Enqueue(limiter, 2);

        Replenish(limiter, time);

        Assert.True((await Completed(one)).IsAcquired);
        Assert.True((await Completed(two)).IsAcquired);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(0, stats.CurrentQueuedCount);
        Assert.Equal(0, stats.CurrentAvailablePermits);
        Assert.Equal(3, stats.TotalSuccessfulLeases);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Argument checks and overflow

    [Fact]
    public void AttemptAcquire_NegativePermitCount_ThrowsArgumentOutOfRange()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(-1));

        Assert.Equal("permitCount", ex.ParamName);
        Assert.Equal(0, limiter.GetStatistics()!.TotalFailedLeases);
    }

    [Fact]
    public void AcquireAsync_NegativePermitCount_ThrowsSynchronously()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => StartAcquire(limiter, -1));

        Assert.Equal("permitCount", ex.ParamName);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    [Fact]
    public void AttemptAcquire_MoreThanPermitLimit_ThrowsArgumentOutOfRange()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 3, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(4));

        Assert.Equal(OverLimitParamName, ex.ParamName);
        Assert.Equal(4, ex.ActualValue);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(3, stats.CurrentAvailablePermits);
        Assert.Equal(0, stats.TotalFailedLeases);
    }

    [Fact]
    public void AcquireAsync_MoreThanPermitLimit_ThrowsSynchronously()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 10, OldestFirst, time);

        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => StartAcquire(limiter, 4));

        Assert.Equal(OverLimitParamName, ex.ParamName);
        Assert.Equal(4, ex.ActualValue);
        Assert.Equal(0, limiter.GetStatistics()!.CurrentQueuedCount);
    }

    [Theory]
    [InlineData(QueueProcessingOrder.OldestFirst)]
    [InlineData(QueueProcessingOrder.NewestFirst)]
    public async Task AcquireAsync_IntMaxValuePermitsAndQueue_DoNotOverflow(QueueProcessingOrder order)
    {
        var time = new FakeTimeProvider();
        int limit = LargePermitLimit;
        using ReplenishingRateLimiter limiter = Create(limit, int.MaxValue, order, time);
        Assert.True(limiter.AttemptAcquire(limit).IsAcquired);

        // Fill the queue to exactly int.MaxValue permits with requests of at most the permit limit.
        var waiters = new List<Task<RateLimitLease>>();
        for (long left = int.MaxValue; left > 0; left -= limit)
        {
            waiters.Add(limiter.AcquireAsync((int)Math.Min(limit, left)).AsTask());
        }

        Assert.All(waiters, waiter => Assert.False(waiter.IsCompleted));
        Assert.Equal(int.MaxValue, limiter.GetStatistics()!.CurrentQueuedCount);

        Task<RateLimitLease> extra = limiter.AcquireAsync(1).AsTask();
        if (order == OldestFirst)
        {
            // int.MaxValue + 1 queued permits would wrap to a negative count: the request must fail instead.
            Assert.False((await Completed(extra)).IsAcquired);
            Assert.False((await limiter.AcquireAsync(limit).AsTask().WaitAsync(GuardTimeout)).IsAcquired);
            Assert.Equal(int.MaxValue, limiter.GetStatistics()!.CurrentQueuedCount);

            Replenish(limiter, time);

            Assert.True((await Completed(waiters[0])).IsAcquired);
        }
        else
        {
            Assert.False((await Completed(waiters[0])).IsAcquired); // evicted to make room
            Assert.False(extra.IsCompleted);
            Assert.Equal((long)int.MaxValue - limit + 1, limiter.GetStatistics()!.CurrentQueuedCount);

            Replenish(limiter, time);

            Assert.True((await Completed(extra)).IsAcquired);
        }

        // OldestFirst turned two requests away; NewestFirst evicted one waiter.
        Assert.Equal(order == OldestFirst ? 2 : 1, limiter.GetStatistics()!.TotalFailedLeases);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Zero permits

    [Fact]
    public void AttemptAcquire_ZeroPermitsWithAvailability_Succeeds()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);

        using RateLimitLease lease = limiter.AttemptAcquire(0);

        Assert.True(lease.IsAcquired);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AttemptAcquire_ZeroPermitsWithoutAvailability_Fails()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        using RateLimitLease lease = limiter.AttemptAcquire(0);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryAfter(2, 1, TimeSpan.Zero), retryAfter);
    }

    [Fact]
    public void AttemptAcquire_ZeroPermitsWhileWaitersQueuedOldestFirst_IgnoresTheQueue()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        _ = Enqueue(limiter, 2);

        Assert.True(limiter.AttemptAcquire(0).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_ZeroPermitsWithAvailability_CompletesImmediately()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        _ = Enqueue(limiter, 2); // a probe does not take permits, so it does not wait behind waiters

        Task<RateLimitLease> probe = limiter.AcquireAsync(0).AsTask();

        Assert.True(probe.IsCompletedSuccessfully);
        Assert.True((await probe).IsAcquired);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public async Task AcquireAsync_ZeroPermitsWithoutAvailability_WaitsForAvailability()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        Task<RateLimitLease> probe = Enqueue(limiter, 0);
        time.Advance(ShortWhile);
        Assert.False(probe.IsCompleted);

        Replenish(limiter, time);

        Assert.True((await Completed(probe)).IsAcquired);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Cancellation

    [Fact]
    public async Task AcquireAsync_TokenAlreadyCancelled_CancelsWithoutQueueing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();

        Task<RateLimitLease> cancelled = limiter.AcquireAsync(1, cts.Token).AsTask();

        await Assert.ThrowsAsync<TaskCanceledException>(() => cancelled.WaitAsync(GuardTimeout));
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(0, stats.CurrentQueuedCount);
        Assert.Equal(0, stats.TotalFailedLeases);

        // The queue's one place is still free.
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);
        Replenish(limiter, time);
        Assert.True((await Completed(waiter)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileQueued_ThrowsWithTokenAndReleasesItsPlace()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> waiter = Enqueue(limiter, 2, cts.Token);
        Assert.Equal(2, limiter.GetStatistics()!.CurrentQueuedCount);

        await cts.CancelAsync();

        var ex = await Assert.ThrowsAsync<TaskCanceledException>(() => waiter.WaitAsync(GuardTimeout));
        Assert.Equal(cts.Token, ex.CancellationToken);
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(0, stats.CurrentQueuedCount);
        Assert.Equal(0, stats.TotalFailedLeases);

        // The cancelled waiter takes nothing when permits come back.
        Replenish(limiter, time);
        stats = limiter.GetStatistics()!;
        Assert.Equal(2, stats.CurrentAvailablePermits);
        Assert.Equal(1, stats.TotalSuccessfulLeases);
    }

    [Theory]
    [InlineData(QueueProcessingOrder.OldestFirst)]
    [InlineData(QueueProcessingOrder.NewestFirst)]
    public async Task AcquireAsync_CancelledWhileQueued_QueueSpaceCanBeRefilled(QueueProcessingOrder order)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, order, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> cancelled = Enqueue(limiter, 1, cts.Token);
        if (order == OldestFirst)
        {
            Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired); // the queue is full
        }

        await cts.CancelAsync();
        await Assert.ThrowsAsync<TaskCanceledException>(() => cancelled.WaitAsync(GuardTimeout));

        Task<RateLimitLease> replacement = Enqueue(limiter, 1);
        Replenish(limiter, time);

        Assert.True((await Completed(replacement)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWhileQueuedNewestFirst_NewWaiterDoesNotEvictTheOthers()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> cancelled = Enqueue(limiter, 1, cts.Token);
        Task<RateLimitLease> kept = Enqueue(limiter, 1);

        await cts.CancelAsync();
        Task<RateLimitLease> newest = Enqueue(limiter, 1);

        Assert.True(cancelled.IsCanceled);
        Assert.False(kept.IsCompleted);
        Assert.Equal(0, limiter.GetStatistics()!.TotalFailedLeases);

        Replenish(limiter, time);
        Assert.True((await Completed(newest)).IsAcquired);
        Assert.False(kept.IsCompleted);

        Replenish(limiter, time);
        Assert.True((await Completed(kept)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_CancelledWaiterWasBlockingTheQueue_WaitersBehindAreServedAtTheNextWakeup()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 3, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> blocker = Enqueue(limiter, 2, cts.Token);
        Task<RateLimitLease> behind = Enqueue(limiter, 1);

        await cts.CancelAsync();

        // As in-box: the cancellation frees its queue space but serves no one itself; the next wakeup does.
        Assert.True(blocker.IsCanceled);
        Assert.False(behind.IsCompleted);
        Assert.Equal(1, limiter.GetStatistics()!.CurrentQueuedCount);
        if (ExpectedAutoReplenishing)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
        }
        else
        {
            Replenish(limiter, time);
        }

        Assert.True((await Completed(behind)).IsAcquired);
    }

    [Fact]
    public async Task AcquireAsync_TokenCancelledAfterWaiterWasServed_ChangesNothing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> served = Enqueue(limiter, 1, cts.Token);
        Task<RateLimitLease> next = Enqueue(limiter, 1);
        Replenish(limiter, time);
        Assert.True((await Completed(served)).IsAcquired);

        await cts.CancelAsync();

        Assert.True(served.IsCompletedSuccessfully);
        Assert.False(next.IsCompleted);
        AssertStatistics(limiter, available: 0, queued: 1, successful: 2, failed: 0);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Metadata

    [Fact]
    public async Task SuccessfulLeases_HaveNoMetadata()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 1, OldestFirst, time);
        RateLimitLease attempted = limiter.AttemptAcquire(1);
        RateLimitLease acquired = await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);
        Replenish(limiter, time);
        RateLimitLease served = await Completed(waiter);

        foreach (RateLimitLease lease in new[] { attempted, acquired, served })
        {
            Assert.True(lease.IsAcquired);
            Assert.False(lease.TryGetMetadata(MetadataName.RetryAfter, out _));
            Assert.False(lease.TryGetMetadata(MetadataName.ReasonPhrase, out _));
            Assert.Empty(lease.GetAllMetadata());
            Assert.Empty(lease.MetadataNames);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void AttemptAcquire_Exhausted_RetryAfterIsTimeUntilPermitsReturn(int permits)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);
        time.Advance(ShortWhile);

        using RateLimitLease lease = limiter.AttemptAcquire(permits);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryAfter(4, permits, ShortWhile), retryAfter);
        Assert.True(lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.False(string.IsNullOrWhiteSpace(reason));
    }

    [Theory]
    [InlineData(2, 1)] // 3 of 4: within the first refill
    [InlineData(4, 2)] // the queue takes the next full limit, this request the one after
    public void AttemptAcquire_WaitersQueuedAheadOldestFirst_RetryAfterCoversThem(int queued, int requested)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 8, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(4).IsAcquired);
        _ = Enqueue(limiter, queued);
        time.Advance(ShortWhile);

        using RateLimitLease lease = limiter.AttemptAcquire(requested);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryBehind(4, queued + requested), retryAfter);
    }

    [Theory]
    [InlineData(4, 2, 2, 1)] // 3 of 4: within the first refill
    [InlineData(2, 1, 1, 2)] // 3 of 2: the queued one takes the first refill, this request the second
    public async Task AcquireAsync_QueueFull_RejectionCarriesRetryAfterAndReason(int limit, int queueLimit, int queued, int requested)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(limit, queueLimit, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(limit).IsAcquired);
        _ = Enqueue(limiter, queued);
        time.Advance(ShortWhile);

        using RateLimitLease lease = await limiter.AcquireAsync(requested).AsTask().WaitAsync(GuardTimeout);

        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        Assert.Equal(ExpectedRetryBehind(limit, queued + requested), retryAfter);
        Assert.True(lease.TryGetMetadata(MetadataName.ReasonPhrase, out string? reason));
        Assert.False(string.IsNullOrWhiteSpace(reason));
    }

    /// <summary>
    /// <see cref="ExpectedRetryAfter"/> for <paramref name="permits"/> permits that may exceed the limit (a request behind
    /// queued ones, all taken in order): what is beyond the first full refill comes one <see cref="FullRefill"/> later each.
    /// </summary>
    private TimeSpan ExpectedRetryBehind(int permitLimit, int permits)
    {
        int refills = (permits - 1) / permitLimit;
        return ExpectedRetryAfter(permitLimit, permits - (refills * permitLimit), ShortWhile) + (FullRefill * refills);
    }

    [Fact]
    public void FailedLease_MetadataNames_ContainRetryAfterAndReasonPhrase()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        using RateLimitLease lease = limiter.AttemptAcquire(1);

        Assert.False(lease.IsAcquired);
        Assert.Contains(MetadataName.RetryAfter.Name, lease.MetadataNames);
        Assert.Contains(MetadataName.ReasonPhrase.Name, lease.MetadataNames);
        var all = lease.GetAllMetadata().ToDictionary(pair => pair.Key, pair => pair.Value);
        Assert.IsType<TimeSpan>(all[MetadataName.RetryAfter.Name]);
        Assert.IsType<string>(all[MetadataName.ReasonPhrase.Name]);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Time

    [Theory]
    [InlineData(3)] // hours
    [InlineData(24 * 400)] // more than 2^20 windows of 10 s: beyond the range an epoch can be read as ahead
    public void AttemptAcquire_ClockSteppedBackAnyAmount_ReadsAsNoTimePassed(int hours)
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 0, OldestFirst, time);
        time.Advance(TimeSpan.FromHours(hours) + Window); // a limiter that has run for longer than the step
        Replenish(limiter, time);
        Assert.True(limiter.AttemptAcquire(3).IsAcquired);
        time.Advance(ShortWhile);
        long available = limiter.GetStatistics()!.CurrentAvailablePermits;

        time.AdjustTime(time.GetUtcNow() - TimeSpan.FromHours(hours));

        Assert.Equal(available, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.False(limiter.AttemptAcquire((int)available + 1).IsAcquired);
        Assert.True(limiter.AttemptAcquire((int)available).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Null(limiter.IdleDuration);
        if (ExpectedAutoReplenishing)
        {
            // The clock is still behind the time the limiter has seen: a window of it brings nothing back.
            time.Advance(Window);
            Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Disposal

    [Fact]
    public async Task Dispose_WithQueuedWaiters_CompletesThemWithFailedLeases()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);

        limiter.Dispose();

        Assert.False((await Completed(first)).IsAcquired);
        Assert.False((await Completed(second)).IsAcquired);
        Assert.Equal([MetadataName.ReasonPhrase.Name], (await first).MetadataNames); // no RETRY_AFTER: none is listed

        // Permits coming back later serve nobody and throw nowhere.
        Replenish(limiter, time);
    }

    [Fact]
    public async Task DisposeAsync_WithQueuedWaiters_CompletesThemWithFailedLeases()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 2, NewestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> first = Enqueue(limiter, 1);
        Task<RateLimitLease> second = Enqueue(limiter, 1);

        await limiter.DisposeAsync();

        Assert.False((await Completed(first)).IsAcquired);
        Assert.False((await Completed(second)).IsAcquired);
        Replenish(limiter, time);
    }

    [Fact]
    public void Dispose_Afterwards_AcquiringAndStatisticsThrowObjectDisposed()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);

        limiter.Dispose();

        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire(1));
        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire(0));
        Assert.Throws<ObjectDisposedException>(() => StartAcquire(limiter, 1));
        Assert.Throws<ObjectDisposedException>(() => StartAcquire(limiter, 0));
        Assert.Throws<ObjectDisposedException>(() => limiter.GetStatistics());

        // The argument checks still come first.
        Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => limiter.AttemptAcquire(-1));
    }

    [Fact]
    public void Dispose_Afterwards_ReplenishmentAndIdlePropertiesStillAnswer()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(2, 2, OldestFirst, time);

        limiter.Dispose();

        Assert.Equal(!ExpectedAutoReplenishing, limiter.TryReplenish());
        Assert.Equal(ExpectedAutoReplenishing, limiter.IsAutoReplenishing);
        Assert.Equal(ExpectedReplenishmentPeriod, limiter.ReplenishmentPeriod);
        Assert.NotNull(limiter.IdleDuration);
    }

    [Fact]
    public async Task Dispose_Twice_IsHarmless()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);

        limiter.Dispose();
        limiter.Dispose();
        await limiter.DisposeAsync();

        Assert.False((await Completed(waiter)).IsAcquired);
        Assert.Throws<ObjectDisposedException>(() => limiter.AttemptAcquire(1));
    }

    [Fact]
    public async Task Dispose_AfterCancellingQueuedRequest_Succeeds()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 2, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        using var cts = new CancellationTokenSource();
        Task<RateLimitLease> cancelled = Enqueue(limiter, 1, cts.Token);
        Task<RateLimitLease> other = Enqueue(limiter, 1);
        await cts.CancelAsync();

        limiter.Dispose();

        await Assert.ThrowsAsync<TaskCanceledException>(() => cancelled.WaitAsync(GuardTimeout));
        Assert.False((await Completed(other)).IsAcquired);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Idle duration

    [Fact]
    public void IdleDuration_NewLimiter_IsIdleSinceCreation()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.Equal(TimeSpan.Zero, limiter.IdleDuration);

        time.Advance(TimeSpan.FromSeconds(3));

        Assert.Equal(TimeSpan.FromSeconds(3), limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_WhilePermitHeld_IsNull()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.Null(limiter.IdleDuration);
        time.Advance(ShortWhile);
        Assert.Null(limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_ZeroPermitAcquire_KeepsLimiterIdle()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        time.Advance(ShortWhile);

        Assert.True(limiter.AttemptAcquire(0).IsAcquired);

        Assert.Equal(ShortWhile, limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_AfterPermitsReturn_GrowsWhileIdle()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        Replenish(limiter, time);
        TimeSpan? idle = limiter.IdleDuration;
        Assert.NotNull(idle);
        time.Advance(TimeSpan.FromSeconds(2));

        Assert.Equal(idle + TimeSpan.FromSeconds(2), limiter.IdleDuration);
    }

    [Fact]
    public void IdleDuration_WhileRequestsQueued_IsNull()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 0);

        Assert.Null(limiter.IdleDuration);

        Replenish(limiter, time);
        Assert.True(waiter.IsCompletedSuccessfully);
        Assert.NotNull(limiter.IdleDuration);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Statistics

    [Fact]
    public void GetStatistics_EachCall_ReturnsNewInstance()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);

        RateLimiterStatistics first = limiter.GetStatistics()!;
        RateLimiterStatistics second = limiter.GetStatistics()!;

        Assert.NotSame(first, second);
        Assert.Equal(2, first.CurrentAvailablePermits);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.Equal(2, first.CurrentAvailablePermits); // a snapshot, not a live view
    }

    [Fact]
    public async Task GetStatistics_AfterActivity_CountsPermitsWaitersAndLeases()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(3, 2, OldestFirst, time);
        AssertStatistics(limiter, available: 3, queued: 0, successful: 0, failed: 0);

        Assert.True(limiter.AttemptAcquire(2).IsAcquired);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(1).IsAcquired);
        AssertStatistics(limiter, available: 0, queued: 0, successful: 2, failed: 1);

        Task<RateLimitLease> waiter = Enqueue(limiter, 2);
        Assert.False((await limiter.AcquireAsync(1).AsTask().WaitAsync(GuardTimeout)).IsAcquired); // queue full
        AssertStatistics(limiter, available: 0, queued: 2, successful: 2, failed: 2);

        Replenish(limiter, time);

        Assert.True((await Completed(waiter)).IsAcquired);
        AssertStatistics(limiter, available: 1, queued: 0, successful: 3, failed: 2);
    }

    [Fact]
    public async Task GetStatistics_ZeroPermitRequests_AreCounted()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 1, OldestFirst, time);

        Assert.True(limiter.AttemptAcquire(0).IsAcquired);
        Assert.True((await limiter.AcquireAsync(0).AsTask().WaitAsync(GuardTimeout)).IsAcquired);
        AssertStatistics(limiter, available: 1, queued: 0, successful: 2, failed: 0);

        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Assert.False(limiter.AttemptAcquire(0).IsAcquired);
        Task<RateLimitLease> probe = Enqueue(limiter, 0);
        AssertStatistics(limiter, available: 0, queued: 0, successful: 3, failed: 1);

        Replenish(limiter, time);

        Assert.True((await Completed(probe)).IsAcquired);
        AssertStatistics(limiter, available: 1, queued: 0, successful: 4, failed: 1);
    }

    [Fact]
    public void GetStatistics_AfterDispose_Throws()
    {
        var time = new FakeTimeProvider();
        ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);
        Assert.NotNull(limiter.GetStatistics());

        limiter.Dispose();

        Assert.Throws<ObjectDisposedException>(() => limiter.GetStatistics());
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Leases and allocations

    [Fact]
    public async Task SuccessfulLeases_AreOneCachedInstance()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(4, 1, OldestFirst, time);

        RateLimitLease first = limiter.AttemptAcquire(1);
        first.Dispose(); // disposing a lease of a rate limiter gives nothing back and must not spoil the cached instance
        RateLimitLease second = limiter.AttemptAcquire(1);
        RateLimitLease probe = limiter.AttemptAcquire(0);
        RateLimitLease acquired = await limiter.AcquireAsync(2).AsTask().WaitAsync(GuardTimeout);

        Assert.True(second.IsAcquired);
        Assert.Same(first, second);
        Assert.Same(first, probe);
        Assert.Same(first, acquired);
    }

    [Fact]
    public void AttemptAcquire_Success_AllocatesNothing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(100_000, 0, OldestFirst, time); // room for five measured runs
        for (int i = 0; i < 500; i++)
        {
            limiter.AttemptAcquire(1); // warm up every path the measured loop takes
        }

        bool allAcquired = true;
        long allocated = AllocatedOnThisThread(() =>
        {
            for (int i = 0; i < 5_000; i++)
            {
                allAcquired &= limiter.AttemptAcquire(1).IsAcquired;
            }
        });

        Assert.True(allAcquired);
        Assert.Equal(0, allocated);
    }

    /// <summary>
    /// What <paramref name="round"/> allocates on this thread, from a run during which no garbage collection happened:
    /// a collection started by a test running in parallel retires this thread's allocation buffer, which the counter
    /// can then show as a few kilobytes allocated. Up to five runs; an allocation per call shows in every one.
    /// </summary>
    private static long AllocatedOnThisThread(Action round)
    {
        long allocated = 0;
        for (int run = 0; run < 5; run++)
        {
            int collections = GC.CollectionCount(0);
            long before = GC.GetAllocatedBytesForCurrentThread();
            round();
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (GC.CollectionCount(0) == collections)
            {
                return allocated;
            }
        }

        return allocated;
    }

    [Fact]
    public async Task AcquireAsync_SuccessWithQueueingOn_AllocatesNothing()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(100_000, 10, OldestFirst, time); // room for five measured runs
        for (int i = 0; i < 500; i++)
        {
            (await limiter.AcquireAsync(1)).Dispose(); // warm up every path the measured loop takes
        }

        bool allSynchronous = true;
        bool allAcquired = true;
        long allocated = AllocatedOnThisThread(() =>
        {
            for (int i = 0; i < 5_000; i++)
            {
                ValueTask<RateLimitLease> pending = limiter.AcquireAsync(1);
                allSynchronous &= pending.IsCompletedSuccessfully;
                allAcquired &= allSynchronous && pending.Result.IsAcquired; // completed: Result does not block
            }
        });

        Assert.True(allSynchronous);
        Assert.True(allAcquired);
        Assert.Equal(0, allocated);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Replenishment

    [Fact]
    public void ReplenishmentProperties_MatchTheOptions()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);

        Assert.Equal(ExpectedAutoReplenishing, limiter.IsAutoReplenishing);
        Assert.Equal(ExpectedReplenishmentPeriod, limiter.ReplenishmentPeriod);
    }

    [Fact]
    public void TryReplenish_ReturnsTrueOnlyWhenReplenishmentIsManual()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(1, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);

        Assert.Equal(!ExpectedAutoReplenishing, limiter.TryReplenish());

        // Too early for any replenishment: whatever it returned, it freed nothing.
        Assert.Equal(0, limiter.GetStatistics()!.CurrentAvailablePermits);
    }

    [Fact]
    public void AdvancingTime_WithoutTryReplenish_ReturnsPermitsOnlyWhenAutomatic()
    {
        var time = new FakeTimeProvider();
        using ReplenishingRateLimiter limiter = Create(2, 0, OldestFirst, time);
        Assert.True(limiter.AttemptAcquire(2).IsAcquired);

        time.Advance(Window * 3);

        Assert.Equal(ExpectedAutoReplenishing ? 2 : 0, limiter.GetStatistics()!.CurrentAvailablePermits);
        Assert.Equal(ExpectedAutoReplenishing, limiter.AttemptAcquire(1).IsAcquired);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Helpers

    /// <summary>
    /// Takes the only permit of <paramref name="limiter"/> (limit 1, queue 1 or more), queues a request and checks that it
    /// is served exactly <paramref name="wait"/> later: also when that is longer than a timer can be set for (about 49.7 days).
    /// </summary>
    protected static async Task AssertWaiterServedAfter(ReplenishingRateLimiter limiter, FakeTimeProvider time, TimeSpan wait)
    {
        ArgumentNullException.ThrowIfNull(limiter);
        ArgumentNullException.ThrowIfNull(time);
        Assert.True(wait.Ticks % TimeSpan.TicksPerMillisecond == 0, "Timers count milliseconds: the wait must be whole ones.");
        Assert.True(limiter.AttemptAcquire(1).IsAcquired);
        Task<RateLimitLease> waiter = Enqueue(limiter, 1);

        // Whole milliseconds first: the fake runs timer callbacks at the time Advance moves to, and a wakeup that has to
        // re-arm from there can only be exact if that time is a whole millisecond before the permit returns.
        time.Advance(wait - TimeSpan.FromMilliseconds(1));
        time.Advance(TimeSpan.FromMilliseconds(1) - TimeSpan.FromTicks(1));
        Assert.False(waiter.IsCompleted);
        time.Advance(TimeSpan.FromTicks(1));

        Assert.True((await Completed(waiter)).IsAcquired);
    }

    /// <summary>Starts a request that must wait.</summary>
    protected static Task<RateLimitLease> Enqueue(RateLimiter limiter, int permits, CancellationToken token = default)
    {
        Task<RateLimitLease> wait = limiter.AcquireAsync(permits, token).AsTask();
        Assert.False(wait.IsCompleted, $"AcquireAsync({permits}) should have waited.");
        return wait;
    }

    /// <summary>The lease of a request that the last call must already have completed.</summary>
    protected static async Task<RateLimitLease> Completed(Task<RateLimitLease> wait)
    {
        Assert.True(wait.IsCompleted, "The request should have been completed by now.");
        return await wait.WaitAsync(GuardTimeout);
    }

    /// <summary>The <c>RETRY_AFTER</c> of a lease that must have failed.</summary>
    protected static TimeSpan RetryAfterOf(RateLimitLease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        Assert.False(lease.IsAcquired);
        Assert.True(lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retryAfter));
        return retryAfter;
    }

    /// <summary>Calls AcquireAsync for its synchronous exceptions.</summary>
    protected static void StartAcquire(RateLimiter limiter, int permits) => _ = limiter.AcquireAsync(permits).AsTask();

    private static void AssertStatistics(RateLimiter limiter, long available, long queued, long successful, long failed)
    {
        RateLimiterStatistics stats = limiter.GetStatistics()!;
        Assert.Equal(
            (available, queued, successful, failed),
            (stats.CurrentAvailablePermits, stats.CurrentQueuedCount, stats.TotalSuccessfulLeases, stats.TotalFailedLeases));
    }
}
