namespace RateEngine.Benchmarks.Subjects;

/// <summary>The seven limiters under test.</summary>
internal enum LimiterKind
{
    InboxSliding,
    Log,
    Counter,
    InboxFixed,
    LockFreeFixed,
    InboxBucket,
    LockFreeBucket,
}
