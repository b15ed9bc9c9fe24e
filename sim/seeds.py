"""The same scenarios over many seeds: how robust each policy's figures are to luck.

    .venv/bin/python -m sim.seeds [SCENARIO ...] [--seeds 10]

Prints, per scenario, a Markdown table with each policy's failed requests on every seed, its
worst success rate and its median cost per successful request, the seeds on which
Switchyard failed more requests than the best baseline, and, over all the seeds, whether
Switchyard is behind any baseline by more than luck explains (`behind_by_chance`). The
ablations (not the live system, see docs/SIMULATION.md) are listed last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from math import exp, lgamma, log

from sim.metrics import Summary
from sim.runner import ABLATIONS, POLICIES, SWITCHYARD, run_scenario
from sim.scenario import load_scenario, scenario_names

BASELINES = ("primary-only", "round-robin", "litellm-cooldown", "envoy-outlier")
# Behind beyond chance: luck alone would put Switchyard this far behind less often than this.
SIGNIFICANCE = 0.05


def behind_by_chance(switchyard: int, baseline: int) -> float:
    """How likely luck alone puts Switchyard at least this many failed requests behind.

    Both policies serve the same requests and a failed request is a rare event, so each
    total is close to a Poisson count. Given their sum k, Switchyard's count is
    Binomial(k, 1/2) when the two fail at the same rate; the answer is the one-sided p-value
    P(X >= switchyard). One request behind on one seed (1 against 0) gives 0.5: no evidence.
    """
    k = switchyard + baseline

    def term(i: int) -> float:  # P(X = i), in logs: k runs to tens of thousands
        return exp(lgamma(k + 1) - lgamma(i + 1) - lgamma(k - i + 1) - k * log(2.0))

    # Sum the shorter tail.
    if switchyard <= k - switchyard:
        return max(0.0, 1.0 - sum(term(i) for i in range(switchyard)))
    return min(1.0, sum(term(i) for i in range(switchyard, k + 1)))


def summaries_per_seed(
    name: str, policies: Sequence[str], seeds: Sequence[int]
) -> dict[str, list[Summary]]:
    """Each policy's figures on each seed of the scenario, in seed order."""
    scenario = load_scenario(name)
    runs: dict[str, list[Summary]] = {p: [] for p in policies}
    for seed in seeds:
        for summary in run_scenario(scenario, policies, seed).summaries:
            runs[summary.policy].append(summary)
    return runs


def odds_behind(failed: Mapping[str, int]) -> dict[str, float]:
    """`behind_by_chance` of Switchyard's failed requests against each baseline's."""
    return {b: behind_by_chance(failed[SWITCHYARD], failed[b]) for b in BASELINES}


def robustness_table(name: str, seeds: Sequence[int]) -> str:
    """The Markdown table of one scenario over the seeds."""
    names = (*POLICIES, *ABLATIONS)
    runs = summaries_per_seed(name, names, seeds)
    failed = {p: [s.failed for s in runs[p]] for p in names}
    lines = [
        f"{load_scenario(name).title} ({name}), seeds {seeds[0]} to {seeds[-1]}",
        "",
        "| policy | failed requests per seed | worst success | median cost / success |",
        "|---|---|---:|---:|",
    ]
    for policy in names:
        label = f"{policy} (ablation, not live)" if policy in ABLATIONS else policy
        worst = min(s.success_rate for s in runs[policy])
        cost = statistics.median(s.cost_per_success or float("nan") for s in runs[policy])
        lines.append(
            f"| {label} | {' '.join(f'{n:,}' for n in failed[policy])} "
            f"| {worst:.3f}% | {cost:.5f} |"
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
    totals = {p: sum(failed[p]) for p in names}
    odds = odds_behind(totals)
    lines.append("")
    lines.append(
        f"All seeds, switchyard {totals[SWITCHYARD]:,} failed against "
        + ", ".join(f"{b} {totals[b]:,} (p = {odds[b]:.2f})" for b in BASELINES)
        + f"; behind beyond chance (p < {SIGNIFICANCE:g}): "
        + (", ".join(b for b in BASELINES if odds[b] < SIGNIFICANCE) or "none")
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
