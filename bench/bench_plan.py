"""Benchmark: ``isthmus.netplan.plan`` for 100, 1,000 and 10,000 clusters (best of 3).

Run with ``.venv/bin/python bench/bench_plan.py``. Prints a markdown table and the growth ratio per
10x clusters (~10x means linear; ~100x would mean quadratic). Only ``plan`` is timed: building the
Fleet (pydantic validation) happens before the clock starts.

Fleets: 3-node clusters (headroom 1.5 -> 5 per-node /26 blocks -> a /23 each) in 10.0.0.0/8 with two
avoided /16s, /24 service CIDRs from 100.64.0.0/10, dual-stack so every cluster gets four CIDRs.
Istio is the mesh: Cilium cluster IDs stop at 511, so 1,000+ clusters cannot share a ClusterMesh.
A second series replans with a lock holding the first 90% (the "add clusters" path); parsing that
lock (``Lock.from_dict``, the CLI's job) is timed on its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial

from isthmus.netplan import Lock, plan
from isthmus.spec.fleet import Fleet

SIZES = (100, 1_000, 10_000)
REPEATS = 3


def fleet(n: int) -> Fleet:
    return Fleet.model_validate(
        {
            "metadata": {"name": f"bench-{n}"},
            "spec": {
                "controlPlane": "c0",
                "network": {
                    "podSupernet": "10.0.0.0/8",
                    "serviceSupernet": "100.64.0.0/10",
                    "podSupernetV6": "fd00:10::/48",
                    "serviceSupernetV6": "fd00:20::/96",
                    "avoid": ["10.1.0.0/16", "10.200.0.0/16"],
                    "podMaskSize": 26,
                    "servicePrefix": 24,
                    "mesh": "istio",
                },
                "clusters": [
                    {
                        "name": f"c{i}",
                        "region": f"r{i % 7}",
                        "zones": [{"name": "a", "nodes": 3}],
                        "maxPodsPerNode": 32,
                        "ipFamily": "dual",
                    }
                    for i in range(n)
                ],
            },
        }
    )


def best_of(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    rows: list[tuple[int, float, float, float]] = []
    for n in SIZES:
        f = fleet(n)
        full = best_of(partial(plan, f))
        data = plan(fleet(n - n // 10)).lock.to_dict()
        parse = best_of(partial(Lock.from_dict, data))
        kept = Lock.from_dict(data)
        incremental = best_of(partial(plan, f, kept))
        rows.append((n, full, incremental, parse))
    print(f"Python {sys.version.split()[0]}, best of {REPEATS}\n")
    print("| clusters | plan (s) | per cluster (µs) | replan with lock of 90% (s) | Lock.from_dict (s) | plan growth |")
    print("|---:|---:|---:|---:|---:|---:|")
    previous: float | None = None
    for n, full, incremental, parse in rows:
        growth = "—" if previous is None else f"{full / previous:.1f}x for 10x clusters"
        print(f"| {n:,} | {full:.3f} | {full / n * 1e6:.0f} | {incremental:.3f} | {parse:.3f} | {growth} |")
        previous = full
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
