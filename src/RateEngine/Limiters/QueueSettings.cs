using System.Threading.RateLimiting;

namespace RateEngine.Limiters;

/// <summary>What a limiter (or a partition key) does with requests that must wait, and what it reports about replenishing.</summary>
/// <param name="QueueLimit">The most permits that may wait.</param>
/// <param name="Order">Which waiter is served first.</param>
/// <param name="ReplenishmentPeriod">What <c>ReplenishmentPeriod</c> reports: the in-box limiter's period for these options.</param>
/// <param name="PermitCountName">The parameter name of the exception for a request above the limit, as the in-box limiter names it.</param>
internal readonly record struct QueueSettings(int QueueLimit, QueueProcessingOrder Order, TimeSpan ReplenishmentPeriod, string PermitCountName = "permitCount");
