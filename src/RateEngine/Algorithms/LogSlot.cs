namespace RateEngine.Algorithms;

/// <summary>One ring entry.</summary>
internal struct LogSlot
{
    /// <summary>The ticket whose stamp this is; written last (release), so a reader that sees it sees the stamp.</summary>
    public long Sequence;

    /// <summary>The admission's decision time.</summary>
    public long Stamp;

    /// <summary>The stamp this slot held before, so that an exact refund can put it back (or <see cref="SlidingWindowLog.UnknownStamp"/>).</summary>
    public long Previous;
}
