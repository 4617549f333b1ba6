namespace RateEngine.Benchmarks.Subjects;

/// <summary>The limiters under test.</summary>
internal enum LimiterKind
{
    InboxSliding,
    Log,

    /// <summary>The log with per-core blocks (<see cref="PerCoreReservationOptions"/>, issue 13 part 1's next best).</summary>
    PerCoreLog,
    Counter,
    InboxFixed,
    LockFreeFixed,
    InboxBucket,
    LockFreeBucket,
}
