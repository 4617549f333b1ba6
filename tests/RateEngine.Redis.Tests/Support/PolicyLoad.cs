namespace RateEngine.Redis.Tests.Support;

/// <summary>
/// 32 callers spread over several nodes' policies, each acquiring for a random user with a random token estimate and
/// reconciling a random actual (0 to twice the estimate) when admitted: what each user was admitted and reconciled.
/// </summary>
public static class PolicyLoad
{
    public static async Task<(int[] Admitted, long[] Tokens)> HammerAsync<TCall>(
        IReadOnlyList<IRatePolicy<TCall>> nodes, Func<string, TCall> call, int users, int attemptsPerCaller)
    {
        var admitted = new int[users];
        var tokens = new long[users];
        await Task.WhenAll(Enumerable.Range(0, 32).Select(caller => Task.Run(async () =>
        {
            var random = new Random(caller);
            for (int i = 0; i < attemptsPerCaller; i++)
            {
                int user = random.Next(users);
                int cost = random.Next(1, 20);
                PolicyLease lease = await nodes[caller % nodes.Count].AcquireAsync(call($"u{user}"), new RequestCost(cost, 0));
                if (lease.IsAcquired)
                {
                    Interlocked.Increment(ref admitted[user]);
                    int actual = random.Next(0, 2 * cost);
                    await lease.ReconcileAsync(new RequestCost(actual, 0));
                    Interlocked.Add(ref tokens[user], actual);
                }

                lease.Dispose();
            }
        })));
        return (admitted, tokens);
    }
}
