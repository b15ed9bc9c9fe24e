"""What timing optimizationTime costs a decision: routing.decide with and without the clock
it reads around strategy choice and scoring (docs/BENCHMARKS.md).

Run from the repository root: ``python -m bench.bench_decide_clock``
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_decide import NOW, REQUEST, catalog
from routing import RoutingSnapshot, decide


def measure(
    snapshot: RoutingSnapshot, calls: int, warmup: int, clock: Callable[[], float] | None
) -> float:
    """p50 of one decide call, in microseconds."""
    for _ in range(warmup):
        decide(REQUEST, snapshot, NOW, clock=clock)
    samples = [0] * calls
    timer = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            start = timer()
            decide(REQUEST, snapshot, NOW, clock=clock)
            samples[i] = timer() - start
    finally:
        gc.enable()
    samples.sort()
    return samples[calls // 2] / 1000


def main() -> None:
    """Print p50 without and with the clock, alternated, the median of `--runs` of each."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"routing.decide, {args.calls} calls after {args.warmup} warm-up, {args.runs} runs\n")
    print("| nodes | p50 without clock (µs) | p50 with clock (µs) | with / without |")
    print("|---:|---:|---:|---:|")
    for size in (3, 10, 100):
        snapshot = catalog(size)
        bare, timed = [], []
        for _ in range(args.runs):  # alternated: a busy moment weighs on both sides alike
            bare.append(measure(snapshot, args.calls, args.warmup, None))
            timed.append(measure(snapshot, args.calls, args.warmup, time.perf_counter))
        a, b = sorted(bare)[len(bare) // 2], sorted(timed)[len(timed) // 2]
        print(f"| {size} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
