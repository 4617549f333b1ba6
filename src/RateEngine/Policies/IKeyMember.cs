namespace RateEngine.Policies;

/// <summary>A layer that keeps a cell in every entry of a <see cref="KeyTable{TContext,TKey}"/>.</summary>
internal interface IKeyMember
{
    /// <summary>A fresh cell for a key created at <paramref name="now"/>.</summary>
    KeyEntry CreateCell(long now);

    /// <summary>Whether <paramref name="cell"/> is indistinguishable from a fresh one at <paramref name="now"/>.</summary>
    bool IsIdle(KeyEntry cell, long now);
}
