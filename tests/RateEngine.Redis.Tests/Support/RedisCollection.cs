namespace RateEngine.Redis.Tests.Support;

/// <summary>The tests that share one server (each with its own key prefix); the failure tests start their own.</summary>
[CollectionDefinition(Name)]
public sealed class RedisCollection : ICollectionFixture<RedisServer>
{
    public const string Name = "redis";
}
