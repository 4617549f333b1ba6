namespace RateEngine;

/// <summary>What a policy layer counts for each request.</summary>
public enum PolicyMeter
{
    /// <summary>One per request (the default): request rates and concurrent streams.</summary>
    Requests,

    /// <summary>The request's tokens (<see cref="RequestCost.Tokens"/>): token budgets.</summary>
    Tokens,

    /// <summary>The request's money (<see cref="RequestCost.Money"/>, in the unit the application chose, e.g. micro-dollars): cost caps.</summary>
    Money,
}
