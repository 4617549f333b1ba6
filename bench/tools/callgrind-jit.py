#!/usr/bin/env python3
"""Per-attempt instruction counts of one limiter's admit (or reject) path, by JIT-compiled method.

callgrind cannot name .NET's JIT-compiled code, so the profiled process writes a perf map
(DOTNET_PerfMapEnabled=1 -> /tmp/perf-PID.map) and this script maps callgrind's anonymous
addresses onto it. It profiles two runs that differ only in their number of attempts and divides
the difference by the extra attempts, so start-up, JIT and warm-up cancel out.

usage: bench/tools/callgrind-jit.py KIND admit|reject [N1 N2]   (run from the repository root, after a Release build)
Counts are instructions, not time: a slow instruction (a clock read that exits the VM, a contended
CAS) counts as one. Under valgrind clock_gettime is a real system call, whose kernel side is not counted.
"""
import bisect, collections, glob, os, re, subprocess, sys

def run(kind, path, attempts, workdir):
    out = os.path.join(workdir, f"callgrind.{kind}.{path}.{attempts}")
    # Tiered compilation stays on (the code measured is the tier-1 code an application runs); the warm-up passes give
    # the background compiler time to get there under valgrind. Tier labels in the output show where it got.
    env = dict(os.environ, DOTNET_PerfMapEnabled="1", DOTNET_EnableWriteXorExecute="0", BENCH_WARMUP_PASSES="12")
    dll = "bench/RateEngine.Benchmarks/bin/Release/net10.0/RateEngine.Benchmarks.dll"
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=yes",
                           "dotnet", dll, "--profile", kind, path, str(attempts)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"profiled run failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    pid = re.search(r"==(\d+)==", proc.stderr).group(1)
    return out, f"/tmp/perf-{pid}.map"

def load_map(path):
    starts, ends, names = [], [], []
    for line in open(path):
        addr, size, name = line.rstrip("\n").split(" ", 2)
        starts.append(int(addr, 16)); ends.append(int(addr, 16) + int(size, 16)); names.append(name)
    order = sorted(range(len(starts)), key=starts.__getitem__)
    return [starts[i] for i in order], [ends[i] for i in order], [names[i] for i in order]

def self_costs(callgrind_out, perfmap):
    starts, ends, names = load_map(perfmap)
    def name_of(fn, addr):
        if not fn.startswith("0x"):
            return fn
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < ends[i]:
            return names[i]
        return "[unmapped JIT/stub code]"
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", callgrind_out],
                               capture_output=True, text=True).stdout
    costs = collections.Counter()
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(.+?)(?:\s+\[(.*)\])?$", line)
        if not m or ":" not in m.group(2):
            continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(2).split(":", 1)[1].split("'")[0]  # drop callgrind's recursion-context suffix
        obj = os.path.basename(m.group(3) or "???")
        if obj != "???":
            # Native code: named when the library has symbols, else only the library (coreclr ships stripped).
            label = f"[{obj}]" if fn.startswith("0x") else f"{fn} [{obj}]"
        else:
            label = name_of(fn, int(fn, 16) if fn.startswith("0x") else 0)
        costs[label] += ir
    return costs

def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    kind, path = sys.argv[1], sys.argv[2]
    n1, n2 = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (200_000, 1_200_000)
    workdir = os.environ.get("TMPDIR", "/tmp")
    c1 = self_costs(*run(kind, path, n1, workdir))
    c2 = self_costs(*run(kind, path, n2, workdir))
    per_op = {k: (c2[k] - c1.get(k, 0)) / (n2 - n1) for k in c2}
    total = sum(v for v in per_op.values() if v > 0)
    print(f"{kind} {path}: {total:.1f} instructions per attempt (self cost, {n2 - n1} extra attempts)")
    for name, v in sorted(per_op.items(), key=lambda kv: -kv[1]):
        if v < 0.5:
            break
        print(f"{v:8.1f}  {100 * v / total:5.1f} %  {name}")

main()
