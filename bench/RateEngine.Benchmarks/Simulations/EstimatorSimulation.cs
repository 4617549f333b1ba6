using System.Diagnostics;

namespace RateEngine.Benchmarks.Simulations;

/// <summary>
/// How much under-admission <see cref="CostEstimator{TSelector}"/> removes: one seeded stream of LLM requests from
/// several users, each user behind a tokens-per-minute budget, replayed on a virtual clock three times, reserving
/// max_tokens, the learned estimate, or the exact actual (the ideal). Deterministic; no wall clock in the simulation.
/// </summary>
internal static class EstimatorSimulation
{
    private const string Model = "chat-model";

    public static EstimatorResult Run(EstimatorSettings settings)
    {
        var clock = Stopwatch.StartNew();
        Request[] requests = Generate(settings);
        var rows = new List<EstimatorRow>();
        long learnedAtEnd = 0;
        foreach (ReservationKind kind in Enum.GetValues<ReservationKind>())
        {
            var estimator = new CostEstimator<string>(settings.Estimator);
            rows.Add(Replay(settings, requests, kind, estimator));
            if (kind == ReservationKind.Learned)
            {
                learnedAtEnd = estimator.Estimate(Model, settings.MaxTokens);
            }
        }

        return new EstimatorResult(settings, rows, requests.Length, learnedAtEnd, clock.Elapsed);
    }

    /// <summary>An arrival: when, from whom, and the output it will turn out to have (unknown to the policy but the ideal).</summary>
    private readonly record struct Request(double Time, int User, long Actual);

    /// <summary>A response in flight: when it ends, and what to reconcile then.</summary>
    private readonly record struct InFlight(int User, long ReservedIn, long Reserved, long Actual);

    private static Request[] Generate(EstimatorSettings s)
    {
        var random = new Random(s.Seed);
        double sigma = Math.Log(s.P95Tokens / s.MedianTokens) / 1.6448536269514722; // z of the 95th percentile
        double end = s.Minutes * 60.0;
        double meanGap = 60.0 / s.RequestsPerUserPerMinute;
        var requests = new List<Request>();
        for (int user = 0; user < s.Users; user++)
        {
            for (double t = Exponential(random, meanGap); t < end; t += Exponential(random, meanGap))
            {
                double normal = Math.Sqrt(-2.0 * Math.Log(1.0 - random.NextDouble())) * Math.Cos(2.0 * Math.PI * random.NextDouble());
                long actual = Math.Clamp((long)Math.Round(s.MedianTokens * Math.Exp(sigma * normal)), 1, s.MaxTokens);
                requests.Add(new Request(t, user, actual));
            }
        }

        requests.Sort((a, b) => a.Time.CompareTo(b.Time));
        return [.. requests];
    }

    private static double Exponential(Random random, double mean) => -mean * Math.Log(1.0 - random.NextDouble());

    private static EstimatorRow Replay(EstimatorSettings s, Request[] requests, ReservationKind kind, CostEstimator<string> estimator)
    {
        var budgets = new FixedWindowBudget[s.Users];
        for (int u = 0; u < s.Users; u++)
        {
            budgets[u] = new FixedWindowBudget(s.TokensPerMinute, 60.0);
        }

        // Actual output of the requests admitted in each (user, minute): the tokens the budget let through in it.
        var admittedTokens = new long[s.Users, s.Minutes + 1];
        var inFlight = new PriorityQueue<InFlight, double>();
        long admitted = 0, refused = 0, actualTokens = 0, overruns = 0, overrunTokens = 0, largestOverrun = 0;

        foreach (Request request in requests)
        {
            while (inFlight.TryPeek(out InFlight done, out double endsAt) && endsAt <= request.Time)
            {
                inFlight.Dequeue();
                Finish(done, endsAt);
            }

            long reserve = kind switch
            {
                ReservationKind.MaxTokens => s.MaxTokens,
                ReservationKind.Learned => estimator.Estimate(Model, s.MaxTokens),
                ReservationKind.Exact => request.Actual,
                _ => throw new InvalidOperationException($"unknown reservation {kind}"),
            };
            FixedWindowBudget budget = budgets[request.User];
            long window = budget.TryReserve(request.Time, reserve);
            if (window < 0)
            {
                refused++;
                continue;
            }

            admitted++;
            actualTokens += request.Actual;
            admittedTokens[request.User, window] += request.Actual;
            if (request.Actual > reserve)
            {
                overruns++;
                overrunTokens += request.Actual - reserve;
                largestOverrun = Math.Max(largestOverrun, request.Actual - reserve);
            }

            double ends = request.Time + s.FirstTokenSeconds + (request.Actual / s.TokensPerSecond);
            inFlight.Enqueue(new InFlight(request.User, window, reserve, request.Actual), ends);
        }

        while (inFlight.TryDequeue(out InFlight done, out double endsAt))
        {
            Finish(done, endsAt);
        }

        long worst = 0;
        foreach (long tokens in admittedTokens)
        {
            worst = Math.Max(worst, tokens);
        }

        return new EstimatorRow(kind, admitted, refused, actualTokens, overruns, overrunTokens, largestOverrun, (double)worst / s.TokensPerMinute);

        void Finish(InFlight done, double at)
        {
            budgets[done.User].Reconcile(at, done.ReservedIn, done.Reserved, done.Actual);
            estimator.Observe(Model, done.Actual);
        }
    }
}
