"""The same scenarios over many seeds: how robust each policy's figures are to luck.

    .venv/bin/python -m sim.seeds [SCENARIO ...] [--seeds 10]

Prints, per scenario, a Markdown table with each policy's failed requests on every seed, its
worst success rate and its median cost per successful request, the seeds on which
Switchyard failed more requests than the best baseline, and, over all the seeds, whether
Switchyard is behind any baseline by more than luck explains (`behind_by_chance`), and how
far it is from the oracle (`oracle_gap`: success gap, cost premium against the bounds of
issue #22). The ablations (not the live system, see docs/SIMULATION.md) are listed last.
`--against-oracle` runs only Switchyard and the oracle and prints only that last line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import exp, lgamma, log

from sim.metrics import Summary
from sim.runner import ABLATIONS, ORACLE, POLICIES, SWITCHYARD, run_scenario
from sim.scenario import load_scenario, scenario_names

BASELINES = ("primary-only", "round-robin", "litellm-cooldown", "envoy-outlier")
# Behind beyond chance: luck alone would put Switchyard this far behind less often than this.
SIGNIFICANCE = 0.05
# Against the oracle (issue #22): Switchyard's success at most this many percentage points
# below the oracle's, and its cost premium over the healthy baseline at most
# PREMIUM_FACTOR times the oracle's plus PREMIUM_POINTS.
SUCCESS_GAP = 0.05
PREMIUM_FACTOR = 1.25
PREMIUM_POINTS = 1.0


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
    return runs_per_seed(name, policies, seeds)[0]


def runs_per_seed(
    name: str, policies: Sequence[str], seeds: Sequence[int]
) -> tuple[dict[str, list[Summary]], list[Summary]]:
    """Each policy's figures per seed, and the healthy baseline's per seed."""
    scenario = load_scenario(name)
    runs: dict[str, list[Summary]] = {p: [] for p in policies}
    healthy: list[Summary] = []
    for seed in seeds:
        result = run_scenario(scenario, policies, seed)
        for summary in result.summaries:
            runs[summary.policy].append(summary)
        healthy.append(result.healthy)
    return runs, healthy


@dataclass(frozen=True, slots=True)
class OracleGap:
    """Switchyard against the oracle over all seeds: the issue's two bounds."""

    success_gap: float  # percentage points, Switchyard's success rate minus the oracle's
    premium: float  # Switchyard's cost per success over the healthy baseline's, percent
    oracle_premium: float

    @property
    def premium_bound(self) -> float:
        """The premium Switchyard may pay: 1.25 times the oracle's plus one point."""
        return PREMIUM_FACTOR * max(self.oracle_premium, 0.0) + PREMIUM_POINTS

    @property
    def success_met(self) -> bool:
        """Within SUCCESS_GAP percentage points of the oracle's success."""
        return self.success_gap >= -SUCCESS_GAP

    @property
    def premium_met(self) -> bool:
        """At most the premium bound."""
        return self.premium <= self.premium_bound


def pooled_premium(summaries: Sequence[Summary], healthy: Sequence[Summary]) -> float:
    """Cost per successful request over all seeds, against the healthy baseline's, percent."""
    cost = sum(s.cost for s in summaries) / max(1, sum(s.successes for s in summaries))
    base = sum(s.cost for s in healthy) / max(1, sum(s.successes for s in healthy))
    return (cost / base - 1.0) * 100.0 if base > 0 else 0.0


def oracle_gap(
    switchyard: Sequence[Summary], oracle: Sequence[Summary], healthy: Sequence[Summary]
) -> OracleGap:
    """Switchyard's success gap and premium against the oracle's, pooled over the seeds."""
    requests = sum(s.requests for s in switchyard)
    gap = (
        100.0
        * (sum(s.successes for s in switchyard) - sum(s.successes for s in oracle))
        / max(1, requests)
    )
    return OracleGap(gap, pooled_premium(switchyard, healthy), pooled_premium(oracle, healthy))


def odds_behind(failed: Mapping[str, int]) -> dict[str, float]:
    """`behind_by_chance` of Switchyard's failed requests against each baseline's."""
    return {b: behind_by_chance(failed[SWITCHYARD], failed[b]) for b in BASELINES}


def robustness_table(name: str, seeds: Sequence[int], *, ablations: bool = True) -> str:
    """The Markdown table of one scenario over the seeds."""
    names = (*POLICIES, *ABLATIONS) if ablations else tuple(POLICIES)
    runs, healthy = runs_per_seed(name, names, seeds)
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
    lines.append("")
    lines.append(describe(oracle_gap(runs[SWITCHYARD], runs[ORACLE], healthy)))
    return "\n".join(lines)


def describe(gap: OracleGap) -> str:
    """The line about the oracle under a scenario's table."""
    return (
        f"Against the oracle, all seeds: success {gap.success_gap:+.3f} pp "
        f"(bound -{SUCCESS_GAP:g}: {'met' if gap.success_met else 'missed'}); cost premium "
        f"{gap.premium:+.1f} % against the oracle's {gap.oracle_premium:+.1f} % "
        f"(bound {gap.premium_bound:+.1f} %: {'met' if gap.premium_met else 'missed'})"
    )


def oracle_line(name: str, seeds: Sequence[int]) -> str:
    """`describe` from a run of Switchyard and the oracle alone."""
    runs, healthy = runs_per_seed(name, (SWITCHYARD, ORACLE), seeds)
    return describe(oracle_gap(runs[SWITCHYARD], runs[ORACLE], healthy))


def main(argv: Sequence[str] | None = None) -> int:
    """Print the robustness table of each scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="default: every shipped scenario")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1..N (default 10)")
    parser.add_argument("--without-ablations", action="store_true", help="leave out the ablations")
    parser.add_argument(
        "--against-oracle",
        action="store_true",
        help="only Switchyard and the oracle: one line per scenario",
    )
    args = parser.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    started = time.perf_counter()
    for name in args.scenarios or scenario_names():
        if args.against_oracle:
            print(f"{name}: {oracle_line(name, seeds)}", flush=True)
        else:
            table = robustness_table(name, seeds, ablations=not args.without_ablations)
            print(table, end="\n\n", flush=True)
    print(f"{time.perf_counter() - started:.0f} s of wall time", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
