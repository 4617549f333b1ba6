using Microsoft.Extensions.Time.Testing;

namespace RateEngine.Tests.Support;

/// <summary>A fake clock whose reads fail while <see cref="Failing"/> is set (a provider that throws is in scope).</summary>
internal sealed class FailingClock : FakeTimeProvider
{
    public bool Failing { get; set; }

    public override long GetTimestamp() => Failing ? throw new TimeoutException("the clock failed") : base.GetTimestamp();
}
