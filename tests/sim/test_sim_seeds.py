"""sim.seeds: the many-seed table and its test of luck against a real gap."""

from __future__ import annotations

import re

import pytest

from sim.seeds import BASELINES, behind_by_chance, robustness_table


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
