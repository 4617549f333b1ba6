namespace RateEngine.Partitioning;

/// <summary>Why <see cref="PartitionTable{TKey,TEntry}.GetOrAdd"/> refused a new key.</summary>
internal enum AddRefusal
{
    /// <summary>Not refused.</summary>
    None,

    /// <summary>The table holds as many live keys as it may.</summary>
    Full,

    /// <summary>As many live keys as may share one hash already do.</summary>
    TooManyCollisions,
}
