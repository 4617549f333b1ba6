namespace RateEngine.Benchmarks.Subjects;

/// <summary>Names, families and baselines of <see cref="LimiterKind"/>.</summary>
internal static class LimiterKinds
{
    public static readonly LimiterKind[] All = Enum.GetValues<LimiterKind>();

    public static bool IsInbox(this LimiterKind kind) =>
        kind is LimiterKind.InboxSliding or LimiterKind.InboxFixed or LimiterKind.InboxBucket;

    /// <summary>The in-box limiter a RateEngine limiter is compared with (itself for an in-box one).</summary>
    public static LimiterKind Baseline(this LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding or LimiterKind.Log or LimiterKind.PerCoreLog or LimiterKind.Counter => LimiterKind.InboxSliding,
        LimiterKind.InboxFixed or LimiterKind.LockFreeFixed => LimiterKind.InboxFixed,
        _ => LimiterKind.InboxBucket,
    };

    public static string DisplayName(this LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding => "in-box SlidingWindowRateLimiter",
        LimiterKind.Log => "SlidingWindowLogRateLimiter",
        LimiterKind.PerCoreLog => "SlidingWindowLogRateLimiter, per-core blocks",
        LimiterKind.Counter => "SlidingWindowCounterRateLimiter",
        LimiterKind.InboxFixed => "in-box FixedWindowRateLimiter",
        LimiterKind.LockFreeFixed => "LockFreeFixedWindowRateLimiter",
        LimiterKind.InboxBucket => "in-box TokenBucketRateLimiter",
        LimiterKind.LockFreeBucket => "LockFreeTokenBucketRateLimiter",
        _ => kind.ToString(),
    };

    public static string ShortName(this LimiterKind kind) => kind switch
    {
        LimiterKind.InboxSliding => "in-box sliding",
        LimiterKind.Log => "log",
        LimiterKind.PerCoreLog => "per-core log",
        LimiterKind.Counter => "counter",
        LimiterKind.InboxFixed => "in-box fixed",
        LimiterKind.LockFreeFixed => "lock-free fixed",
        LimiterKind.InboxBucket => "in-box bucket",
        LimiterKind.LockFreeBucket => "lock-free bucket",
        _ => kind.ToString(),
    };
}
