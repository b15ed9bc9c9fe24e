"""sim.seeds: the many-seed table and its test of luck against a real gap."""

from __future__ import annotations

import re

import pytest

from sim.metrics import ShiftTimes, Summary
from sim.seeds import BASELINES, behind_by_chance, describe, oracle_gap, robustness_table


@pytest.mark.parametrize(
    ("switchyard", "baseline", "p"),
    [
        (1, 0, 0.5),  # one request on one seed: a coin toss
        (10, 0, 1 / 1024),
        (0, 5, 1.0),
        (3, 3, 0.65625),  # P(X >= 3), X ~ Binomial(6, 1/2) = 42/64
    ],
)
def test_behind_by_chance_is_the_one_sided_binomial_p_value(
    switchyard: int, baseline: int, p: float
) -> None:
    assert behind_by_chance(switchyard, baseline) == pytest.approx(p)


def test_more_failures_behind_means_less_luck() -> None:
    odds = [behind_by_chance(n, 20) for n in range(0, 60, 5)]
    assert odds == sorted(odds, reverse=True)
    assert behind_by_chance(40, 20) < 0.05 < behind_by_chance(26, 20)


def test_the_table_totals_each_policy_and_names_who_is_behind_beyond_chance() -> None:
    table = robustness_table("avalara_flapping", [1, 2])

    rows = [r.split(" | ") for r in table.splitlines() if r.startswith("| ")][1:]
    per_seed = {
        cells[0].strip("| "): [int(n.replace(",", "")) for n in cells[1].split()] for cells in rows
    }
    summary = next(line for line in table.splitlines() if line.startswith("All seeds"))
    ours = sum(per_seed["switchyard"])
    assert summary.startswith(f"All seeds, switchyard {ours:,} failed against ")
    for baseline in BASELINES:
        theirs = sum(per_seed[baseline])
        p = behind_by_chance(ours, theirs)
        assert f"{baseline} {theirs:,} (p = {p:.2f})" in summary
    named = re.search(r"behind beyond chance \(p < 0.05\): (.*)$", summary)
    assert named is not None
    expected = [b for b in BASELINES if behind_by_chance(ours, sum(per_seed[b])) < 0.05]
    assert named.group(1) == (", ".join(expected) or "none")


def summary(policy: str, requests: int, successes: int, cost: float) -> Summary:
    return Summary(policy, requests, successes, successes, cost, None, None, ShiftTimes(), 0.0)


def test_the_oracle_gap_pools_the_seeds_and_applies_the_bounds() -> None:
    healthy = [summary("healthy", 1000, 1000, 10.0), summary("healthy", 1000, 1000, 10.0)]
    oracle = [summary("oracle", 1000, 1000, 11.0), summary("oracle", 1000, 1000, 11.0)]
    # One failed request in 2,000 (0.05 pp) and +13 % against the oracle's +10 %.
    close = [summary("switchyard", 1000, 999, 11.1887), summary("switchyard", 1000, 1000, 11.4)]

    gap = oracle_gap(close, oracle, healthy)

    assert gap.success_gap == pytest.approx(-0.05)
    assert gap.oracle_premium == pytest.approx(10.0)
    assert gap.premium == pytest.approx(13.0, abs=0.01)
    assert gap.premium_bound == pytest.approx(1.25 * 10.0 + 1.0)
    assert gap.success_met and gap.premium_met

    # Two failed requests (0.1 pp) and +15 %: both bounds missed.
    far = [summary("switchyard", 1000, 998, 11.477), summary("switchyard", 1000, 1000, 11.5)]
    missed = oracle_gap(far, oracle, healthy)
    assert not missed.success_met and not missed.premium_met
    assert "success -0.100 pp (bound -0.05: missed)" in describe(missed)
