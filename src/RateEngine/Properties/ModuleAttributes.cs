using System.Runtime.CompilerServices;

// No zeroing of locals on entry: C#'s definite assignment already forbids reading a local before it is written, and the
// admit path's frame (its Admission and out locals, inlined twice in a sealed limiter's override) was zeroed on every
// call. The one stackalloc in the assembly (PartitionTable.RandomSeed) is filled whole before it is read.
[module: SkipLocalsInit]
