namespace RateEngine.AspNetCore.Http;

/// <summary>The policies one endpoint's requests are decided by, as one policy, and their names joined with '+'.</summary>
internal sealed record Combination<TContext>(string Name, IRatePolicy<TContext> Policy);
