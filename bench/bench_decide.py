"""Times routing.decide on synthetic catalogs and prints p50/p99 as a markdown table.

Run from the repository root: ``python -m bench.bench_decide``
(or ``python bench/bench_decide.py``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import replace
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
from routing.types import Constraints, ServiceRules

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


# The same request with routing rules present: every node tagged and assigned operations, the
# service's defaults for the operation and the request's own constraints, all satisfied by
# the same nodes as without them (so the decision is the same and only the rules' cost shows).
RULED_REQUEST = replace(
    REQUEST,
    constraints=Constraints(
        allowed_regions=frozenset(f"region-{i}" for i in range(4)),
        required_tags=frozenset({"pci"}),
    ),
)


def with_rules(snapshot: RoutingSnapshot) -> RoutingSnapshot:
    """The snapshot with tags, operations and a service default that exclude nothing."""
    nodes = tuple(
        replace(n, tags=frozenset({"pci", "eu"}), operations=frozenset({"payment_processing"}))
        for n in snapshot.nodes[SERVICE]
    )
    rules = ServiceRules({"payment_processing": Constraints(excluded_regions=frozenset({"x"}))})
    return replace(snapshot, nodes={SERVICE: nodes}, rules={SERVICE: rules})


# The fields a decision explains itself with, which the API serializes into every answer.
EXPLAINED = ("strategy_reason", "reason", "outcome", "exclusions")


def measure(
    snapshot: RoutingSnapshot,
    calls: int,
    warmup: int,
    request: RoutingRequest = REQUEST,
    *,
    fresh: bool = False,
    explained: bool = False,
) -> tuple[float, float]:
    """p50 and p99 of one decide call, in microseconds.

    ``fresh``: each call on a new copy of the snapshot (untimed), as the simulator decides,
    so the decision is a snapshot's first. ``explained``: the timed call also reads the
    decision's explanation, as the API does when it answers.
    """
    copies = [replace(snapshot) for _ in range(calls)] if fresh else [snapshot] * calls
    for _ in range(warmup):
        decide(request, replace(snapshot) if fresh else snapshot, NOW)
    samples = [0] * calls
    clock = time.perf_counter_ns
    # Collections triggered by other code's garbage would be charged to decide.
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            current = copies[i]
            start = clock()
            decision = decide(request, current, NOW)
            if explained:
                for name in EXPLAINED:
                    getattr(decision, name)
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
    parser.add_argument(
        "--rules", action="store_true", help="also time the same decisions with routing rules"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="decide each time on a new copy of the snapshot (a snapshot's first decision)",
    )
    parser.add_argument(
        "--explained",
        action="store_true",
        help="also read each decision's explanation, as the API does when it answers",
    )
    args = parser.parse_args()
    mode = ", fresh snapshot per call" if args.fresh else ""
    mode += ", explanation read" if args.explained else ""
    print(
        f"routing.decide, {args.calls} calls after {args.warmup} warm-up{mode}, Python "
        f"{sys.version.split()[0]}\n"
    )
    if not args.rules:
        print("| nodes | p50 (µs) | p99 (µs) |")
        print("|---:|---:|---:|")
        for size in (3, 10, 100):
            p50, p99 = measure(
                catalog(size),
                args.calls,
                args.warmup,
                fresh=args.fresh,
                explained=args.explained,
            )
            print(f"| {size} | {p50:.1f} | {p99:.1f} |")
        return
    print("| nodes | p50 without rules (µs) | p50 with rules (µs) | with / without |")
    print("|---:|---:|---:|---:|")
    for size in (3, 10, 100):
        plain, ruled = catalog(size), with_rules(catalog(size))
        # Alternated, three of each, so a busy moment weighs on both sides alike.
        bare, rules = [], []
        for _ in range(3):
            bare.append(measure(plain, args.calls, args.warmup)[0])
            rules.append(measure(ruled, args.calls, args.warmup, RULED_REQUEST)[0])
        a, b = sorted(bare)[1], sorted(rules)[1]
        print(f"| {size} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
