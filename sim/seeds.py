"""The same scenarios over many seeds: how robust each policy's figures are to luck.

    .venv/bin/python -m sim.seeds [SCENARIO ...] [--seeds 10]

Prints, per scenario, a Markdown table with each policy's failed requests on every seed, its
worst success rate and its median cost per successful request, and the seeds on which
Switchyard failed more requests than the best baseline. The ablations (not the live system,
see docs/SIMULATION.md) are listed last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from sim.runner import ABLATIONS, POLICIES, SWITCHYARD, run_scenario
from sim.scenario import load_scenario, scenario_names

BASELINES = ("primary-only", "round-robin", "litellm-cooldown", "envoy-outlier")


def robustness_table(name: str, seeds: Sequence[int]) -> str:
    """The Markdown table of one scenario over the seeds."""
    scenario = load_scenario(name)
    names = (*POLICIES, *ABLATIONS)
    failed: dict[str, list[int]] = {p: [] for p in names}
    success: dict[str, list[float]] = {p: [] for p in names}
    cost: dict[str, list[float]] = {p: [] for p in names}
    for seed in seeds:
        for summary in run_scenario(scenario, names, seed).summaries:
            failed[summary.policy].append(summary.failed)
            success[summary.policy].append(summary.success_rate)
            cost[summary.policy].append(summary.cost_per_success or float("nan"))
    lines = [
        f"{scenario.title} ({name}), seeds {seeds[0]} to {seeds[-1]}",
        "",
        "| policy | failed requests per seed | worst success | median cost / success |",
        "|---|---|---:|---:|",
    ]
    for policy in names:
        label = f"{policy} (ablation, not live)" if policy in ABLATIONS else policy
        lines.append(
            f"| {label} | {' '.join(f'{n:,}' for n in failed[policy])} "
            f"| {min(success[policy]):.3f}% | {statistics.median(cost[policy]):.5f} |"
        )
    behind = [
        str(seed)
        for index, seed in enumerate(seeds)
        if failed[SWITCHYARD][index] > min(failed[b][index] for b in BASELINES)
    ]
    lines.append("")
    lines.append(
        "Seeds where switchyard failed more requests than the best baseline: "
        + (", ".join(behind) if behind else "none")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the robustness table of each scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="default: every shipped scenario")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1..N (default 10)")
    args = parser.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    started = time.perf_counter()
    for name in args.scenarios or scenario_names():
        print(robustness_table(name, seeds), end="\n\n", flush=True)
    print(f"{time.perf_counter() - started:.0f} s of wall time", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
