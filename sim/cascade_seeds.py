"""A cascade scenario over many seeds: who was served and what money was left, per policy.

    .venv/bin/python -m sim.cascade_seeds [SCENARIO] [--seeds 10]

Prints a Markdown table with, per policy, CRITICAL and HIGH success (lowest over the seeds
and over all of them), requests shed, retries refused, and the budget left at the end
(lowest and median over the seeds). The default scenario is `samsara_cascade`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from routing.types import Priority
from sim.cascade import ClassFigures
from sim.runner import run_scenario
from sim.scenario import load_scenario
from sim.seeds import BASELINES

POLICIES = (*BASELINES, "switchyard-unprotected", "switchyard")


def _rate(figures: Sequence[ClassFigures], priority: Priority) -> tuple[int, int]:
    chosen = [c for c in figures if c.priority is priority]
    return sum(c.successes for c in chosen), sum(c.requests for c in chosen)


def cascade_table(name: str, seeds: Sequence[int], policies: Sequence[str] = POLICIES) -> str:
    """The Markdown table of the scenario's per-class figures over the seeds."""
    scenario = load_scenario(name)
    if not scenario.mix:
        raise SystemExit(f"{name} has no mix of priority classes")
    runs = [run_scenario(scenario, policies, seed) for seed in seeds]
    lines = [
        f"{scenario.title} ({name}), seeds {seeds[0]} to {seeds[-1]}",
        "",
        "| policy | CRITICAL success, worst seed / all | HIGH success, worst seed / all "
        "| shed | retries refused | budget left, worst seed / median |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for policy in policies:
        cells = []
        for priority in (Priority.CRITICAL, Priority.HIGH):
            per_seed = [_rate(run.classes[policy], priority) for run in runs]
            worst = min(100.0 * s / n if n else 100.0 for s, n in per_seed)
            served, total = (sum(column) for column in zip(*per_seed, strict=True))
            cells.append(f"{worst:.2f}% / {100.0 * served / total if total else 100.0:.2f}%")
        shed = sum(c.shed for run in runs for c in run.classes[policy])
        refused = sum(c.retries_refused for run in runs for c in run.classes[policy])
        left = [run.summary(policy).budget_left for run in runs]
        lines.append(
            f"| {policy} | {cells[0]} | {cells[1]} | {shed:,} | {refused:,} "
            f"| {min(left):.2f} / {statistics.median(left):.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="samsara_cascade")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1..N (default 10)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(cascade_table(args.scenario, list(range(1, args.seeds + 1))), flush=True)
    print(f"{time.perf_counter() - started:.0f} s of wall time", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
