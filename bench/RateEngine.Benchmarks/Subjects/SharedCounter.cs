namespace RateEngine.Benchmarks.Subjects;

/// <summary>A counter alone on its cache lines, for the Interlocked ceiling.</summary>
internal sealed class SharedCounter
{
#pragma warning disable IDE0051, CS0169 // padding: keeps Value off the object header's and neighbours' cache lines
    private readonly long _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7;
#pragma warning restore IDE0051, CS0169
    public long Value;
#pragma warning disable IDE0051, CS0169
    private readonly long _q0, _q1, _q2, _q3, _q4, _q5, _q6, _q7;
#pragma warning restore IDE0051, CS0169
}
