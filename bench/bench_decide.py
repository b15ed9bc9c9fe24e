"""Times routing.decide on synthetic catalogs and prints p50/p99 as a markdown table.

Run from the repository root: ``python -m bench.bench_decide``
(or ``python bench/bench_decide.py``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable like ``python -m`` does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing import (
    BreakerState,
    BudgetPeriod,
    BudgetState,
    NodeHealth,
    ProviderNode,
    RoutingRequest,
    RoutingSnapshot,
    decide,
)

NOW = datetime(2025, 8, 16, 10, 30, tzinfo=UTC)
SERVICE = "payments"


def catalog(size: int) -> RoutingSnapshot:
    """A snapshot with ``size`` varied nodes, live health for half and a server budget.

    Node 1 has an open breaker and the last node is emergency-only, so both are excluded.
    """
    nodes = tuple(
        ProviderNode(
            node_id=f"node_{i:03d}",
            service=SERVICE,
            provider_name=f"Provider {i}",
            region=f"region-{i % 4}",
            success_rate=97.0 + (i * 7 % 30) / 10,
            cost_per_request=0.005 + (i * 13 % 50) / 1000,
            latency_ms=80.0 + (i * 37 % 400),
            health_score=70.0 + (i * 11 % 30),
            emergency_only=(i == size - 1 and size > 2),
        )
        for i in range(size)
    )
    health = {
        n.node_id: NodeHealth(
            n.node_id,
            n.health_score - 2.0,
            n.success_rate - 0.1,
            n.latency_ms * 1.1,
            BreakerState.OPEN if i == 1 else BreakerState.CLOSED,
            failure_probability=(i % 5) / 20,
        )
        for i, n in enumerate(nodes)
        if i % 2 == 1
    }
    budgets = {SERVICE: BudgetState(SERVICE, BudgetPeriod.daily, 5000.0, 1200.0)}
    return RoutingSnapshot(nodes={SERVICE: nodes}, health=health, budgets=budgets)


# A balanced request (HYBRID_OPTIMIZATION, the most expensive scoring) with every constraint set.
REQUEST = RoutingRequest(
    service=SERVICE,
    operation="payment_processing",
    request_id="bench",
    remaining_budget=1000.0,
    cost_per_request_limit=0.05,
    current_latency=300.0,
    target_latency=250.0,
    current_throughput=150.0,
    target_throughput=200.0,
)


def measure(snapshot: RoutingSnapshot, calls: int, warmup: int) -> tuple[float, float]:
    """p50 and p99 of one decide call, in microseconds."""
    for _ in range(warmup):
        decide(REQUEST, snapshot, NOW)
    samples = [0] * calls
    clock = time.perf_counter_ns
    # Collections triggered by other code's garbage would be charged to decide.
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            start = clock()
            decide(REQUEST, snapshot, NOW)
            samples[i] = clock() - start
    finally:
        gc.enable()
    samples.sort()
    return samples[calls // 2] / 1000, samples[min(calls - 1, calls * 99 // 100)] / 1000


def main() -> None:
    """Print the p50/p99 table for catalogs of 3, 10 and 100 nodes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    args = parser.parse_args()
    print(
        f"routing.decide, {args.calls} calls after {args.warmup} warm-up, Python "
        f"{sys.version.split()[0]}\n"
    )
    print("| nodes | p50 (µs) | p99 (µs) |")
    print("|---:|---:|---:|")
    for size in (3, 10, 100):
        p50, p99 = measure(catalog(size), args.calls, args.warmup)
        print(f"| {size} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
