namespace RateEngine.Benchmarks.Subjects.Partitions;

/// <summary>
/// Tags that give each (side, family) pair its own compiled copy of the partition loops, so that every limiter type has
/// its own call site and PGO profile, as in an application that uses one limiter (see <see cref="IAcquirer"/>).
/// </summary>
internal interface IPartitionTag
{
    static abstract PartitionSide Side { get; }

    static abstract PartitionFamily Family { get; }
}
