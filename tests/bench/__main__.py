"""Benchmarks: `./dev bench [PART ...] [ARGS]` (= python -m tests.bench). Every figure is printed with its ratio
to a floor measured in the same run on the same machine, because absolute times on these shared machines mean little.

Parts (each its own module, each runnable alone as `python -m tests.bench.<module> --help`):
  votes              votes/s and accept latency through the HTTP intake vs "verify one EIP-712 signature and insert
                     one row", and through the update path vs no-op updates (`--big N`: N votes into one proposal)
  experiments        faulty version live -> rollback started over 20 runs, in analysis intervals; false rollbacks
                     over 20 good runs; per-canary-step overhead vs a bare activity call
  kubernetes         sandbox operations on a real kube-apiserver vs one raw server-side apply
  capabilities       full capability checks/s vs a bare pymacaroons verify; latency an agent action pays for its check
  shelter-store      encrypt + replicate + read back, 1 and 2 replicas, vs a raw IPFS add of the same bytes, an add
                     followed by its read-back, and raw writes to both networks in parallel
  shelter-emergency  emergency access end to end with guardians answering at once vs a bare start+update round trip
  charter            kernel filter datagrams/s vs the pass-through program at the same TC egress; userspace gate
                     datagrams/s vs a bare UDP receive loop; data export of 10,000 records end to end and report
                     intake p50/p99 vs Temporal floors
  idle               worker memory per cached waiting workflow, eviction, schedule-to-start while they wait
  audit              audit log appends/s, proof latency at two sizes, verify time vs a bare insert and a bare SHA-256
With no part, all of them run with their quick defaults (the 100,000-vote figure is skipped: `votes --big N`); a
part named without arguments runs its quick defaults too. Arguments (from the first option, or after `--`) go to
every chosen part: `./dev bench votes --big 100000`.
"""

from __future__ import annotations

import sys

from tests.bench.lifecycle import run_child

PARTS = {
    "votes": ("tests.bench.votes", ["--big", "0"]),
    "experiments": ("tests.bench.experiments", []),
    "kubernetes": ("tests.bench.kube_sandbox", []),
    "capabilities": ("tests.bench.capabilities", []),
    "shelter-store": ("tests.bench.shelter_store", []),
    "shelter-emergency": ("tests.bench.shelter_emergency", []),
    "charter": ("tests.bench.charter", []),
    "idle": ("tests.bench.idle", ["--workflows", "2000", "--caches", "100,1000"]),
    "audit": ("tests.bench.audit_log", ["--sizes", "100000,1000000"]),
}


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    # `PART ... [ARGS]`: the leading words name parts, the rest (from the first option, or after `--`) goes to
    # every chosen part; a part given no arguments runs with its quick defaults
    cut = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    chosen, extra = argv[:cut] or list(PARTS), argv[cut:]
    if extra[:1] == ["--"]:
        extra = extra[1:]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        print(f"unknown part(s): {', '.join(unknown)}; choose from {', '.join(PARTS)}", file=sys.stderr)
        return 2
    failed = []
    for part in chosen:
        module, defaults = PARTS[part]
        print(f"\n=== bench: {part} ===", flush=True)
        args = extra or defaults
        if run_child([sys.executable, "-m", module, *args]) != 0:
            failed.append(part)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
