using RateEngine.Benchmarks.Subjects;
using RateEngine.Benchmarks.Subjects.Partitions;
using ScottPlot;

namespace RateEngine.Benchmarks.Compare;

/// <summary>
/// compare.png: single-thread latency on the left, shared-limiter throughput on the right; with a partition section, a
/// second row: first-touch rate on the left, hot-key throughput on the right.
/// </summary>
internal static class CompareChart
{
    private static readonly Color AdmitColor = Color.FromHex("#1f77b4");
    private static readonly Color RejectColor = Color.FromHex("#ff7f0e");
    private static readonly Color OneThreadColor = Color.FromHex("#9ecae1");
    private static readonly Color TwoThreadColor = Color.FromHex("#08519c");
    private static readonly Color CeilingColor = Color.FromHex("#d62728");
    private static readonly Color InboxColor = Color.FromHex("#9e9e9e");
    private static readonly Color EngineColor = Color.FromHex("#2ca02c");

    public static void Save(CompareResult result, string path)
    {
        CompareRow[] limiters = [.. result.Rows.Where(r => r.Kind is not null)];
        string[] labels = [.. limiters.Select(r => r.Kind!.Value.ShortName())];

        // Top row first: positions count down.
        double[] positions = [.. Enumerable.Range(0, limiters.Length).Select(i => (double)(limiters.Length - 1 - i))];

        PartitionResult? partitions = result.Partitions;
        var multiplot = new Multiplot();
        multiplot.AddPlots(partitions is null ? 2 : 4);
        multiplot.Layout = partitions is null
            ? new ScottPlot.MultiplotLayouts.Columns()
            : new ScottPlot.MultiplotLayouts.Grid(rows: 2, columns: 2);

        Plot latency = multiplot.GetPlot(0);
        AddSeries(latency, positions, limiters.Select(r => r.AdmitNanoseconds.Median), 0.2, AdmitColor, "admit", v => $"{v:F1}");
        AddSeries(latency, positions, limiters.Select(r => r.RejectNanoseconds!.Median), -0.2, RejectColor, "reject", v => $"{v:F1}");
        Style(latency, positions, labels, "1 thread: ns per AttemptAcquire + Dispose (lower is better)", "ns/op");

        Plot throughput = multiplot.GetPlot(1);
        AddSeries(throughput, positions, limiters.Select(r => r.OneThreadOpsPerSecond.Median / 1e6), 0.2, OneThreadColor, "1 thread", v => $"{v:F1}");
        AddSeries(throughput, positions, limiters.Select(r => r.TwoThreadOpsPerSecond.Median / 1e6), -0.2, TwoThreadColor, "2 threads", v => $"{v:F1}");
        double ceiling = result.Ceiling.TwoThreadOpsPerSecond.Median / 1e6;
        var line = throughput.Add.VerticalLine(ceiling, 2, CeilingColor, LinePattern.Dashed);
        line.LegendText = $"Interlocked ceiling, 2 threads ({ceiling:F0} M/s)";
        Style(throughput, positions, labels, "One shared limiter: million admissions per second (higher is better)", "M ops/s");

        MachineInfo m = result.Machine;
        latency.Title($"{latency.Axes.Title.Label.Text}\n{m.Cpu}, {m.Cores} cores, {m.Runtime.Split(" (")[0]}, {m.Date:yyyy-MM-dd}", 14);
        if (partitions is not null)
        {
            AddPartitions(multiplot.GetPlot(2), multiplot.GetPlot(3), partitions);
        }

        multiplot.SavePng(path, 1800, partitions is null ? 760 : 1600);
    }

    /// <summary>Partitioned limiters: first-touch rate and hot-key throughput, in-box against RateEngine per family and key.</summary>
    private static void AddPartitions(Plot firstTouch, Plot hot, PartitionResult partitions)
    {
        PartitionRow[] rows = [.. partitions.Rows];
        string[] labels = [.. rows.Select(r => $"{r.Family.ChartName()}, {r.KeyKind.Name()}")];
        double[] positions = [.. Enumerable.Range(0, rows.Length).Select(i => (double)(rows.Length - 1 - i))];

        AddSeries(firstTouch, positions, rows.Select(r => r.Inbox.FirstTouchKeysPerSecond.Median / 1e6), 0.2, InboxColor, "in-box PartitionedRateLimiter", v => $"{v:F2}");
        AddSeries(firstTouch, positions, rows.Select(r => r.Engine.FirstTouchKeysPerSecond.Median / 1e6), -0.2, EngineColor, "RateEngine PartitionedLimiter", v => $"{v:F2}");
        Style(firstTouch, positions, labels, $"Partitioned limiters, first touch: million new keys per second\n1 thread, {partitions.Keys:N0} new keys per fresh limiter (higher is better)", "M keys/s");

        AddSeries(hot, positions, rows.Select(r => r.Inbox.HotOpsPerSecond.Median / 1e6), 0.2, InboxColor, "in-box PartitionedRateLimiter", v => $"{v:F1}");
        AddSeries(hot, positions, rows.Select(r => r.Engine.HotOpsPerSecond.Median / 1e6), -0.2, EngineColor, "RateEngine PartitionedLimiter", v => $"{v:F1}");
        Style(hot, positions, labels, $"Partitioned limiters, hot keys: million admissions per second\n2 threads, random keys among {PartitionSetup.HotKeys:N0} (higher is better)", "M ops/s");
    }

    private static void AddSeries(Plot plot, double[] positions, IEnumerable<double> values, double offset, Color color, string legend, Func<double, string> label)
    {
        var bars = values.Select((v, i) => new Bar
        {
            Position = positions[i] + offset,
            Value = v,
            Size = 0.38,
            FillColor = color,
            LineWidth = 0,
            Label = label(v),
            CenterLabel = false,
        }).ToList();
        var plottable = plot.Add.Bars(bars);
        plottable.Horizontal = true;
        plottable.LegendText = legend;
        plottable.ValueLabelStyle.FontSize = 13;
    }

    private static void Style(Plot plot, double[] positions, string[] labels, string title, string unit)
    {
        plot.Axes.Left.SetTicks(positions, labels);
        plot.Axes.Left.TickLabelStyle.FontSize = 15;
        plot.Axes.Bottom.TickLabelStyle.FontSize = 13;
        plot.Axes.Left.MajorTickStyle.Length = 0;
        plot.Grid.YAxisStyle.IsVisible = false;
        plot.XLabel(unit, 14);
        plot.Title(title, 14);
        plot.Axes.Margins(left: 0, right: 0.15, bottom: 0.03, top: 0.03);
        plot.ShowLegend(Alignment.LowerRight);
        plot.Legend.FontSize = 13;
    }
}
