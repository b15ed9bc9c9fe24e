"""Issue #23 in the simulator: a cascade's retry storm, and the incident's protections.

The protections are routing/incidents.py's `protection_refusal`, applied while the scenario's
incident is open and its blast radius holds the service. Figures only, no timings; fixed
seeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import routing.incidents
import sim.switchyard
from routing.incidents import Protection
from routing.types import Priority
from sim.cascade import OUT_OF_BUDGET, ClassFigures, class_figures
from sim.engine import RunRecord
from sim.runner import (
    ABLATIONS,
    POLICIES,
    ScenarioResult,
    run_policy,
    run_scenario,
    scenario_catalog,
)
from sim.scenario import NodePoint, Scenario, ScenarioError, load_scenario
from sim.world import World, load_catalog

CASCADE = load_scenario("samsara_cascade")
PROTECTED, UNPROTECTED = "switchyard", "switchyard-unprotected"
IMPORTANT = (Priority.CRITICAL, Priority.HIGH)
SHEDDABLE = (Priority.NORMAL, Priority.LOW)


def by_priority(result: ScenarioResult, policy: str) -> dict[Priority, ClassFigures]:
    return {c.priority: c for c in result.classes[policy]}


def run(scenario: Scenario, policy: str, seed: int = 1) -> tuple[World, RunRecord]:
    world = World(scenario, scenario_catalog(scenario), seed)
    return world, run_policy(world, {**POLICIES, **ABLATIONS}[policy])


@pytest.fixture(scope="module")
def seed_one() -> Iterator[ScenarioResult]:
    yield run_scenario(CASCADE, ["envoy-outlier", UNPROTECTED, PROTECTED], seed=1)


def test_protection_keeps_critical_traffic_served_and_budget_left(
    seed_one: ScenarioResult,
) -> None:
    protected = by_priority(seed_one, PROTECTED)
    unprotected = by_priority(seed_one, UNPROTECTED)

    # Without protection the consumers' retries spend the budget and CRITICAL requests are
    # refused when it runs out; with it, the last 30 % is kept for CRITICAL and HIGH.
    assert unprotected[Priority.CRITICAL].out_of_budget > 0
    assert seed_one.summary(UNPROTECTED).budget_left < 0.01
    assert protected[Priority.CRITICAL].success_rate > unprotected[Priority.CRITICAL].success_rate
    assert protected[Priority.HIGH].success_rate > unprotected[Priority.HIGH].success_rate
    assert seed_one.summary(PROTECTED).budget_left > seed_one.summary(UNPROTECTED).budget_left
    # A baseline has no protection either.
    envoy = by_priority(seed_one, "envoy-outlier")
    assert protected[Priority.CRITICAL].success_rate > envoy[Priority.CRITICAL].success_rate


def test_only_lower_priorities_are_shed_and_only_once_the_reserve_is_reached(
    seed_one: ScenarioResult,
) -> None:
    protected = by_priority(seed_one, PROTECTED)
    unprotected = by_priority(seed_one, UNPROTECTED)

    assert all(protected[p].shed == 0 for p in IMPORTANT)
    assert all(protected[p].shed > 0 for p in SHEDDABLE)
    assert all(c.shed == 0 and c.retries_refused == 0 for c in unprotected.values())
    # What is shed is what the budget would not have paid for anyway: the protected run
    # served fewer NORMAL and LOW requests, and kept money.
    assert all(protected[p].successes < unprotected[p].successes for p in SHEDDABLE)


def test_nothing_is_refused_before_the_incident_opens_or_after_it_ends() -> None:
    world, record = run(CASCADE, PROTECTED)
    cascade = CASCADE.cascade
    assert cascade is not None
    protections = {p.value for p in Protection}
    refused = [r for r, why in record.refusals.items() if why in protections]
    # A request arriving just before the opening may be refused on its retry after it.
    timeout = CASCADE.client.timeout_ms / 1000.0 * (CASCADE.client.retries + 1)

    assert refused
    assert all(cascade.start - timeout <= world.arrivals[r] < cascade.end for r in refused)


def test_without_an_incident_nothing_is_shed_even_below_the_reserve() -> None:
    # Less than the reserved 30 % of the budget from the start, and no cascade: the
    # protections stay off, so Switchyard serves exactly what it serves unprotected.
    quiet = CASCADE.model_copy(
        update={"cascade": None, "budget": CASCADE.budget.model_copy(update={"spent": 400.0})}
    ).truncated(300)

    _, protected = run(quiet, PROTECTED)
    _, unprotected = run(quiet, UNPROTECTED)

    assert not protected.refusals
    assert protected.success == unprotected.success
    assert protected.first_node == unprotected.first_node
    assert protected.cost == unprotected.cost


def test_the_refusals_are_routings_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    assert vars(sim.switchyard)["protection_refusal"] is routing.incidents.protection_refusal
    calls: list[float] = []

    def admit_everything(*args: Any) -> None:
        calls.append(args[3])  # `now`
        return None

    monkeypatch.setattr(sim.switchyard, "protection_refusal", admit_everything)
    scenario = CASCADE.truncated(720)
    _, record = run(scenario, PROTECTED)

    cascade = CASCADE.cascade
    assert cascade is not None
    assert calls and min(calls) >= cascade.start
    protections = {p.value for p in Protection}
    assert not [why for why in record.refusals.values() if why in protections]


def test_the_retry_budget_refuses_retries_beyond_it() -> None:
    # Every Maps node fails half its calls during the cascade and callers retry three times:
    # retries beyond the incident's budget are refused, the third retry of a request always.
    failing = {
        node.node_id: (
            NodePoint(at=300, success_rate=50.0),
            NodePoint(at=1200, success_rate=None),
        )
        for node in load_catalog("maps").nodes
    }
    scenario = CASCADE.model_copy(
        update={
            "nodes": failing,
            "client": CASCADE.client.model_copy(update={"retries": 3}),
            "budget": CASCADE.budget.model_copy(update={"spent": 0.0}),
        }
    ).truncated(420)

    world, protected = run(scenario, PROTECTED)
    _, unprotected = run(scenario, UNPROTECTED)
    figures = class_figures(protected.success, protected.refusals, world.traffic)

    refused = sum(c.retries_refused for c in figures)
    assert refused > 0
    assert sum(c.shed for c in figures) == 0  # the budget is far from its reserve
    assert not unprotected.refusals
    # A refused retry is a request that had failed: it never succeeds.
    assert all(
        not protected.success[r]
        for r, why in protected.refusals.items()
        if why == Protection.retry_budget_exhausted
    )


def test_the_consumers_retries_multiply_the_traffic_in_the_cascade_only() -> None:
    world = World(CASCADE, load_catalog("maps"), 1)
    healthy = World(CASCADE.healthy(), load_catalog("maps"), 1)
    traffic = world.traffic
    cascade = CASCADE.cascade
    assert cascade is not None

    retries = [i for i, attempt in enumerate(traffic.job_attempts) if attempt > 0]
    assert len(world.arrivals) > len(healthy.arrivals)
    assert len(world.arrivals) - len(retries) == len(healthy.arrivals)
    assert all(cascade.start < world.arrivals[i] < cascade.end + 1.0 for i in retries)
    assert max(traffic.job_attempts) == cascade.job_retries
    # Only the consumers that use Samsara retry: CRITICAL checkout ETAs are sent directly.
    assert {getattr(traffic.profile(i), "consumer", None) for i in retries} == {
        "route_optimization",
        "driver_notifications",
    }
    # Every job attempt is a first attempt to Maps: it names no failed Maps node.
    assert world.arrivals == sorted(world.arrivals)
    again = World(CASCADE, load_catalog("maps"), 1).traffic
    assert again.classes == traffic.classes and again.times == traffic.times


def test_the_blast_radius_decides_which_service_is_protected() -> None:
    maps = World(CASCADE, load_catalog("maps"), 1).traffic.incident
    assert maps is not None
    assert {"samsara", "maps", "twilio"} <= maps.blast_radius
    assert maps.protects("maps", 600.0)
    assert not maps.protects("maps", 299.0) and not maps.protects("maps", 1200.0)
    assert not maps.protects("stripe", 600.0)


def test_out_of_budget_is_counted_per_class() -> None:
    figures = class_figures(
        [True, False, False],
        {1: OUT_OF_BUDGET, 2: Protection.shed_for_incident.value},
        World(CASCADE.truncated(60), load_catalog("maps"), 1).traffic,
    )
    assert sum(c.requests for c in figures) == 3
    assert sum(c.out_of_budget for c in figures) == 1
    assert sum(c.shed for c in figures) == 1


def test_bad_cascades_are_refused_with_the_field_named() -> None:
    raw = CASCADE.model_dump(mode="json")
    with pytest.raises(ValueError, match="cascade: needs a mix"):
        Scenario.model_validate({**raw, "mix": [{"share": 1.0, "priority": "LOW"}]})
    with pytest.raises(ValueError, match="samsara: end must be after start"):
        Scenario.model_validate({**raw, "cascade": {**raw["cascade"], "end": 100}})

    stranger = dict(raw["mix"][1], consumer="billing")
    with pytest.raises(KeyError, match=r"mix\[1\].consumer"):
        World(
            Scenario.model_validate({**raw, "mix": [raw["mix"][0], stranger]}),
            load_catalog("maps"),
            1,
        )
    unused = {**raw["cascade"], "dependency": "sendgrid"}
    with pytest.raises(KeyError, match=r"cascade\.dependency"):
        World(Scenario.model_validate({**raw, "cascade": unused}), load_catalog("maps"), 1)


def test_a_scenario_file_with_a_bad_mix_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ntitle: Bad\nservice: maps\nduration_seconds: 60\n"
        "traffic: [{at: 0, rate: 1}]\nmix: [{share: 0, priority: LOW}]\n"
    )
    with pytest.raises(ScenarioError, match=r"mix\.0\.share"):
        load_scenario(path)
