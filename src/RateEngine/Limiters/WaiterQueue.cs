using System.Diagnostics;

namespace RateEngine.Limiters;

/// <summary>The wait queue in arrival order: a doubly linked list through the waiters. Guarded by the owner's lock.</summary>
internal sealed class WaiterQueue
{
    public Waiter? First;
    public Waiter? Last;
    public int Count;

    public void AddLast(Waiter waiter)
    {
        Debug.Assert(!waiter.Queued);
        waiter.Previous = Last;
        waiter.Next = null;
        if (Last is null)
        {
            First = waiter;
        }
        else
        {
            Last.Next = waiter;
        }

        Last = waiter;
        waiter.Queued = true;
        Count++;
    }

    public void Remove(Waiter waiter)
    {
        Debug.Assert(waiter.Queued);
        if (waiter.Previous is null)
        {
            First = waiter.Next;
        }
        else
        {
            waiter.Previous.Next = waiter.Next;
        }

        if (waiter.Next is null)
        {
            Last = waiter.Previous;
        }
        else
        {
            waiter.Next.Previous = waiter.Previous;
        }

        waiter.Previous = null;
        waiter.Next = null;
        waiter.Queued = false;
        Count--;
    }
}
