namespace RateEngine.Benchmarks.Redis;

/// <summary>One attempt of a saturation run: its key, the decision's time (µs since the Unix epoch) and the answer.</summary>
internal readonly record struct Attempt(int Key, long Microseconds, bool Admitted);

/// <summary>Over- and under-admission of a saturation run, from every attempt's decision time.</summary>
internal static class WindowCounts
{
    /// <summary>
    /// Over: the largest excess over the cap in any window the design promises: aligned windows for a fixed window, every
    /// window (t - W, t] for a sliding log. Under: over the aligned full windows from <paramref name="fromMicros"/> (after the
    /// run's first window) to <paramref name="toMicros"/> with more attempts than the cap, the mean of cap - admitted (at
    /// least 0) over the cap.
    /// </summary>
    public static (long Over, double Under, int Saturated, double AdmittedPerWindow) Analyze(
        IReadOnlyList<Attempt> attempts, int cap, long windowMicros, bool slidingLog, long fromMicros, long toMicros)
    {
        var perWindow = new Dictionary<(int Key, long Window), (int Admitted, int Attempts)>();
        var admittedByKey = new Dictionary<int, List<long>>();
        foreach (Attempt attempt in attempts)
        {
            var at = (attempt.Key, Math.DivRem(attempt.Microseconds, windowMicros).Quotient);
            (int admitted, int tried) = perWindow.GetValueOrDefault(at);
            perWindow[at] = (admitted + (attempt.Admitted ? 1 : 0), tried + 1);
            if (attempt.Admitted)
            {
                if (!admittedByKey.TryGetValue(attempt.Key, out List<long>? times))
                {
                    admittedByKey[attempt.Key] = times = [];
                }

                times.Add(attempt.Microseconds);
            }
        }

        long over = 0;
        if (slidingLog)
        {
            foreach (List<long> times in admittedByKey.Values)
            {
                times.Sort();
                int first = 0;
                for (int last = 0; last < times.Count; last++)
                {
                    while (times[first] <= times[last] - windowMicros)
                    {
                        first++;
                    }

                    over = Math.Max(over, last - first + 1 - cap);
                }
            }
        }
        else
        {
            over = perWindow.Values.Select(counts => (long)counts.Admitted - cap).DefaultIfEmpty(0).Max();
        }

        long firstFull = (fromMicros / windowMicros) + 2; // skip the window the run started in and the first full one (cold)
        long lastFull = (toMicros / windowMicros) - 1;
        var saturated = perWindow
            .Where(entry => entry.Key.Window >= firstFull && entry.Key.Window <= lastFull && entry.Value.Attempts > cap)
            .Select(entry => entry.Value.Admitted)
            .ToList();
        double under = saturated.Count == 0 ? double.NaN : saturated.Average(admitted => Math.Max(0, cap - admitted)) / cap;
        double mean = saturated.Count == 0 ? double.NaN : saturated.Average();
        return (Math.Max(0, over), under, saturated.Count, mean);
    }
}
