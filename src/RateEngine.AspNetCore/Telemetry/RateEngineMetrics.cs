using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace RateEngine.AspNetCore.Telemetry;

/// <summary>
/// The <c>RateEngine</c> meter's HTTP instruments. Tags stay low-cardinality: policy, layer, result, and the model for
/// tokens and cost (as the OpenTelemetry GenAI conventions tag usage); never a user, key or address. The model usually
/// comes from the request's body, so a client could name a new one per request: the tag takes the first
/// <see cref="MaxModels"/> models seen and tags every later one <see cref="OtherModel"/>, so that no client can grow the
/// app's metric series without bound.
/// </summary>
internal sealed class RateEngineMetrics
{
    public const string MeterName = "RateEngine";

    public const string Reconciled = "reconciled";
    public const string SettledOnAbort = "settled_on_abort";
    public const string EstimateKept = "estimate_kept";

    /// <summary>Admitted by RateEngine, then refused by another limiter of the request (an in-box endpoint limiter): given back whole, it never ran.</summary>
    public const string RefusedElsewhere = "refused_elsewhere";

    /// <summary>The most models the model tag names (a few more under a race of first sightings).</summary>
    public const int MaxModels = 64;

    /// <summary>The model tag of every model past the first <see cref="MaxModels"/>.</summary>
    public const string OtherModel = "other";

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> _models = new(StringComparer.Ordinal);

    /// <summary>Models added so far (the dictionary's Count takes every one of its locks, on each settle of an unseen model).</summary>
    private int _modelCount;

    private readonly Counter<long> _requests;
    private readonly Histogram<double> _acquireDuration;
    private readonly Counter<long> _tokens;
    private readonly Counter<long> _cost;
    private readonly Counter<long> _settlements;

    public RateEngineMetrics(IMeterFactory meters)
    {
        Meter meter = meters.Create(MeterName);
        _requests = meter.CreateCounter<long>("rateengine.requests", "{request}", "Requests decided by RateEngine policies, by policy, result and refusing layer.");
        _acquireDuration = meter.CreateHistogram<double>(
            "rateengine.acquire.duration", "s", "Time to decide a request (policies never queue: this is all the time a request waits for RateEngine).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01] });
        _tokens = meter.CreateCounter<long>("rateengine.tokens", "{token}", "Tokens counted on the policies' budgets when requests settle (the actual, or the estimate kept).");
        _cost = meter.CreateCounter<long>("rateengine.cost", "{unit}", "Cost counted on the policies' budgets when requests settle, in the policies' money unit.");
        _settlements = meter.CreateCounter<long>("rateengine.settlements", "{request}", "Admitted requests by how they settled: reconciled, settled_on_abort (the client went away), estimate_kept, refused_elsewhere (another limiter refused it: it never ran).");
    }

    public void Decided(string policy, PolicyLease lease, TimeSpan duration)
    {
        var tags = new TagList
        {
            { "rateengine.policy", policy },
            { "rateengine.result", lease.IsAcquired ? "admitted" : "rejected" },
        };
        _acquireDuration.Record(duration.TotalSeconds, tags);
        if (lease.BlockingLayer is { } layer)
        {
            tags.Add("rateengine.layer", layer);
        }

        _requests.Add(1, tags);
    }

    public void Settled(string policy, string? model, RequestCost counted, string how)
    {
        var tags = new TagList { { "rateengine.policy", policy } };
        if (model is not null)
        {
            tags.Add("gen_ai.request.model", ModelTag(model));
        }

        if (counted.Tokens > 0)
        {
            _tokens.Add(counted.Tokens, tags);
        }

        if (counted.Money > 0)
        {
            _cost.Add(counted.Money, tags);
        }

        tags.Add("rateengine.settlement", how);
        _settlements.Add(1, tags);
    }

    private string ModelTag(string model)
    {
        if (_models.TryGetValue(model, out string? known))
        {
            return known;
        }

        if (Volatile.Read(ref _modelCount) >= MaxModels)
        {
            return OtherModel;
        }

        // Racing first sightings of different models may pass the check together: a few more than MaxModels at most, one
        // per concurrent settle, and the count still stops the growth.
        if (_models.TryAdd(model, model))
        {
            Interlocked.Increment(ref _modelCount);
        }

        return model;
    }
}
