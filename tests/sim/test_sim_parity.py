"""Issue #9: on every shipped scenario Switchyard succeeds at least as often as every baseline.

Every policy serves the same traffic with the same provider luck; success is counted after
the client's retry. Seed 1 first: where Switchyard failed no more requests than any
baseline, that settles it. Failed requests are rare events, though, and one request behind
on one seed (1 against 0) is a coin toss, so where seed 1 has Switchyard behind, the
scenario is run on seeds 1 to 10 and Switchyard's total must not be behind any baseline's by
more than luck explains (`sim.seeds.behind_by_chance`, p >= 0.05). Figures only, no timings.

A scenario with a mix of priority classes counts its CRITICAL and HIGH requests: during a
cascade Switchyard sheds NORMAL and LOW requests on purpose, to keep the budget's last share
for them (docs/INCIDENTS.md); test_sim_cascade.py has the per-class claims.
"""

from __future__ import annotations

import pytest

from routing.types import Priority
from sim.runner import run_scenario
from sim.scenario import load_scenario, scenario_names
from sim.seeds import BASELINES, SIGNIFICANCE, behind_by_chance, odds_behind, summaries_per_seed

WIDER_SEEDS = range(1, 11)
IMPORTANT = (Priority.CRITICAL, Priority.HIGH)


def failed_requests(name: str, policies: list[str], seeds: range) -> dict[str, int]:
    """Each policy's failed requests over the seeds (CRITICAL and HIGH ones given a mix)."""
    scenario = load_scenario(name)
    if scenario.mix:
        failed = dict.fromkeys(policies, 0)
        for seed in seeds:
            for policy, classes in run_scenario(scenario, policies, seed).classes.items():
                failed[policy] += sum(
                    c.requests - c.successes for c in classes if c.priority in IMPORTANT
                )
        return failed
    runs = summaries_per_seed(name, policies, seeds)
    return {policy: sum(s.failed for s in summaries) for policy, summaries in runs.items()}


@pytest.mark.parametrize("name", scenario_names())
def test_switchyard_succeeds_at_least_as_often_as_every_baseline(name: str) -> None:
    policies = [*BASELINES, "switchyard"]
    seed_one = failed_requests(name, policies, range(1, 2))
    ahead = [b for b in BASELINES if seed_one[b] < seed_one["switchyard"]]
    if not ahead:
        return

    totals = failed_requests(name, policies, WIDER_SEEDS)
    odds = odds_behind(totals)
    behind = {b: (totals[b], round(odds[b], 4)) for b in BASELINES if odds[b] < SIGNIFICANCE}
    assert not behind, (
        f"{name}: switchyard failed {totals['switchyard']} requests over seeds 1-10, "
        f"behind beyond chance: {behind}"
    )


def test_the_wider_check_catches_a_policy_that_is_really_behind() -> None:
    # The ablation without the strand guard strands the flapping service on some seeds
    # (docs/SIMULATION.md): over seeds 1-10 that is far beyond luck against Envoy's totals.
    totals = failed_requests(
        "avalara_flapping", ["envoy-outlier", "switchyard-unguarded"], WIDER_SEEDS
    )

    assert behind_by_chance(totals["switchyard-unguarded"], totals["envoy-outlier"]) < 0.001
