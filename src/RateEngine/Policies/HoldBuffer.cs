using System.Runtime.CompilerServices;

namespace RateEngine.Policies;

/// <summary>A request's holds while it is being decided, on the stack: a refused request allocates nothing for them.</summary>
[InlineArray(MaxLayers)]
internal struct HoldBuffer
{
    /// <summary>The most layers a policy may have.</summary>
    public const int MaxLayers = 16;

    private LayerHold _first;
}
