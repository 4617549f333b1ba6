using RateEngine.Algorithms;

namespace RateEngine;

public abstract partial class RateEngineLimiter
{
    /// <summary>
    /// One admission that can be undone at most once: the only way to refund permits to a limiter. Layered policies and
    /// budgets hold one per layer they took from, so that a rejected request, a cancelled stream or a reconcile can give
    /// permits back without ever freeing the same admission twice. It is nested so that the limiter's refund can be
    /// private: an <see cref="Algorithms.Admission"/> alone cannot be refunded.
    /// </summary>
    /// <remarks>
    /// A reservation ends exactly once: by <see cref="Refund"/> (the permits come back, if the algorithm can still undo the
    /// admission exactly) or by <see cref="Keep"/> (they stay counted until they expire). Both race safely from any threads.
    /// </remarks>
    internal sealed class Reservation
    {
        private readonly RateEngineLimiter _owner;
        private int _ended;

        internal Reservation(RateEngineLimiter owner, in Admission admission)
        {
            _owner = owner;
            Admission = admission;
        }

        /// <summary>The admission this reservation holds.</summary>
        public Admission Admission { get; }

        /// <summary>True once <see cref="Refund"/> or <see cref="Keep"/> has ended the reservation.</summary>
        public bool IsEnded => Volatile.Read(ref _ended) != 0;

        /// <summary>
        /// Ends the reservation and undoes its admission. Returns true when permits were freed; false when the reservation
        /// had already ended, or when the algorithm could no longer undo the admission exactly (it then stays counted).
        /// </summary>
        public bool Refund() => TryEnd() && _owner.Refund(Admission);

        /// <summary>Ends the reservation keeping its permits counted. Returns false when it had already ended.</summary>
        public bool Keep() => TryEnd();

        private bool TryEnd() => Interlocked.Exchange(ref _ended, 1) == 0;
    }
}
