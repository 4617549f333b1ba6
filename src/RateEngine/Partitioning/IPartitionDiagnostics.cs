using RateEngine.Algorithms;

namespace RateEngine.Partitioning;

/// <summary>What tests and diagnostics can see of a partitioned limiter, whatever its key and algorithm types.</summary>
internal interface IPartitionDiagnostics
{
    /// <summary>Keys held right now.</summary>
    long PartitionCount { get; }

    /// <summary>Keys with per-core blocks right now (see <see cref="PartitionedLimiterOptions.PerCoreReservation"/>).</summary>
    int HotKeyCount { get; }

    /// <summary>Sees every admission with its key (boxed) and decision stamp. Null in production.</summary>
    Action<object, Admission>? AdmissionObserver { get; set; }

    /// <summary>Now on the clock every key's state is measured on (its ticks, since the limiter was made).</summary>
    long Now();

    /// <summary>Runs between an eviction's first idle check and its mark (tests: an admission racing the sweep). Null in production.</summary>
    Action? BeforeEvictionMark { get; set; }

    /// <summary>Runs one idle-eviction sweep over every shard now.</summary>
    void SweepAllShards();

    /// <summary>
    /// A key's <c>IdleDuration</c>: null while it holds permits or has waiters; otherwise how long it has been fully
    /// replenished (for a key not held, since the limiter was created).
    /// </summary>
    TimeSpan? GetIdleDuration(object key);

    /// <summary>
    /// Tests: gives the key per-core blocks now, without an admission (its entry is made first if missing), as a key the
    /// sampled admissions found hot. False when the limiter has no per-core reservation, the key's limit is below the hot
    /// keys' floor, or the key is not promoted (its table full, a key limiter for waiters, the hot keys at their maximum).
    /// </summary>
    bool Promote(object key);
}
