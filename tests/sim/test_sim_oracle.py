"""The oracle: the best node by its true state, the cheapest among nearly equally good ones."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine import Engine
from sim.oracle import TOLERANCE, Oracle
from sim.policy import Call
from sim.runner import ORACLE, POLICIES, run_scenario, scenario_catalog
from sim.scenario import Scenario
from sim.world import SimNode, World

MAPBOX, GOOGLE, HERE = "mapbox_primary", "google_maps", "here_maps"


def scenario(service: str, nodes: dict[str, Any], **extra: Any) -> Scenario:
    """A small hand-built scenario: 10 requests/s for 1000 s unless told otherwise."""
    spec: dict[str, Any] = {
        "name": "hand_built",
        "title": "hand built",
        "service": service,
        "duration_seconds": 1000,
        "traffic": [{"at": 0, "rate": 10}],
        "nodes": nodes,
    }
    return Scenario.model_validate({**spec, **extra})


def oracle_for(built: Scenario) -> tuple[Oracle, dict[str, SimNode]]:
    world = World(built, scenario_catalog(built), seed=1)
    nodes = world.nodes()
    return Oracle(world.catalog, built, nodes), nodes


def test_it_avoids_a_node_that_will_time_out() -> None:
    # Samsara's primary answers every call, but its median latency (3.5 s) is past the
    # client's 3 s timeout: about three calls in four never arrive in time.
    built = scenario(
        "samsara",
        {"samsara_primary": [{"at": 100, "latency_ms": 3500}]},
        client={"timeout_ms": 3000},
    )
    oracle, nodes = oracle_for(built)

    assert oracle.choose(Call(0, 50.0)) == "samsara_primary"
    assert nodes["samsara_primary"].chance(150.0, 3000) < 0.3
    assert oracle.choose(Call(1, 150.0)) == "samsara_backup"
    # Its retry goes to the backup too: the timeout is the node's state, not the call's luck.
    assert oracle.choose(Call(1, 153.0, tried=("samsara_backup",))) == "samsara_backup"


def test_it_takes_the_cheaper_of_two_nearly_equally_good_nodes() -> None:
    # Catalog: Mapbox 99.6 % at 0.005, Google Maps 99.7 % at 0.008 -- within the tolerance.
    oracle, _ = oracle_for(scenario("maps", {}))
    assert oracle.choose(Call(0, 1.0)) == MAPBOX

    # Google Maps equally good and cheaper: it wins.
    cheaper = scenario("maps", {GOOGLE: [{"at": 0, "success_rate": 99.6, "cost": 0.004}]})
    assert oracle_for(cheaper)[0].choose(Call(0, 1.0)) == GOOGLE

    # Mapbox worse by more than the tolerance: the likelier node wins whatever its price.
    worse = 99.7 - TOLERANCE - 0.1
    degraded = scenario("maps", {MAPBOX: [{"at": 0, "success_rate": worse}]})
    assert oracle_for(degraded)[0].choose(Call(0, 1.0)) == GOOGLE


def test_it_respects_the_rate_limits_headroom() -> None:
    built = scenario("maps", {MAPBOX: [{"at": 0, "rate_limit": 2}]})
    oracle, nodes = oracle_for(built)
    mapbox = nodes[MAPBOX]

    assert oracle.choose(Call(0, 10.1)) == MAPBOX
    mapbox.call(0, 0, 10.1, 10_000)
    assert mapbox.headroom(10.2) == 1
    assert oracle.choose(Call(1, 10.2)) == MAPBOX
    mapbox.call(1, 0, 10.2, 10_000)
    # The window is full: a call now would be refused with a 429.
    assert mapbox.headroom(10.5) == 0
    assert oracle.choose(Call(2, 10.5)) == GOOGLE
    # A new one-second window has room again.
    assert oracle.choose(Call(3, 11.0)) == MAPBOX


def test_it_respects_the_budget() -> None:
    # Twilio's primary is the likelier node (99.5 % against a secondary at 97 %), but dearer.
    nodes = {
        "twilio_primary_us_east": [{"at": 0, "cost": 0.0119}],
        "twilio_secondary_us_west": [{"at": 0, "success_rate": 97.0}],
    }
    oracle, _ = oracle_for(scenario("twilio", nodes))
    primary, secondary = "twilio_primary_us_east", "twilio_secondary_us_west"

    # Plenty of money: the likelier node.
    assert oracle.choose(Call(0, 0.0, budget_remaining=1000.0)) == primary
    # 10,000 requests still to come and 90 left: 0.009 a request, which the primary's 0.0119
    # would overspend; later requests would find nothing paid for.
    assert oracle.choose(Call(0, 0.0, budget_remaining=90.0)) == secondary
    # Near the end the same money pays for the few requests left: the likelier node again.
    assert oracle.choose(Call(0, 995.0, budget_remaining=90.0)) == primary
    # Less left than the primary's price: only the secondary can be paid for.
    assert oracle.choose(Call(0, 995.0, budget_remaining=0.01)) == secondary


def test_it_uses_the_emergency_node_only_under_an_emergency() -> None:
    down = [{"at": 100, "success_rate": 0.0}]
    built = scenario(
        "stripe",
        {"stripe_primary_us_east": down, "stripe_secondary_us_west": down},
        emergencies=[{"at": 200, "max_budget_override": 0.2, "duration_minutes": 5}],
    )
    oracle, _ = oracle_for(built)

    assert oracle.choose(Call(0, 50.0)) == "stripe_primary_us_east"
    assert oracle.choose(Call(1, 150.0)) != "stripe_premium_emergency"
    assert oracle.choose(Call(2, 250.0)) == "stripe_premium_emergency"
    assert oracle.covers(0.15, 250.0)
    # The cap (0.2) is spent after one more call of 0.15: the override pays no more.
    assert oracle.choose(Call(3, 251.0)) != "stripe_premium_emergency"
    assert not oracle.covers(0.15, 251.0)


def test_the_chance_of_a_call_in_time_is_the_lognormal_tail() -> None:
    built = scenario(
        "samsara", {"samsara_primary": [{"at": 0, "latency_ms": 3000, "latency_sigma": 0.5}]}
    )
    _, nodes = oracle_for(built)
    # Median at the timeout: half the calls arrive in time, at the 99.5 % success rate.
    assert math.isclose(nodes["samsara_primary"].chance(1.0, 3000), 0.995 * 0.5)
    assert math.isclose(nodes["samsara_primary"].chance(1.0, 1e9), 0.995)


NODE = st.fixed_dictionaries(
    {
        "success_rate": st.floats(60.0, 100.0),
        "latency_ms": st.floats(50.0, 4000.0),
        "latency_sigma": st.floats(0.0, 1.0),
    }
)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    mapbox=NODE,
    google=NODE,
    here=NODE,
    timeout_ms=st.floats(500.0, 5000.0),
    seed=st.integers(1, 1000),
)
def test_no_policy_beats_the_oracle_on_a_stationary_scenario(
    mapbox: dict[str, float],
    google: dict[str, float],
    here: dict[str, float],
    timeout_ms: float,
    seed: int,
) -> None:
    # No retry: every request's fate is its first node's, so routing alone decides.
    built = scenario(
        "maps",
        {name: [{"at": 0, **n}] for name, n in ((MAPBOX, mapbox), (GOOGLE, google), (HERE, here))},
        duration_seconds=300,
        client={"timeout_ms": timeout_ms, "retries": 0},
    )
    result = run_scenario(built, list(POLICIES), seed)
    oracle = result.summary(ORACLE)
    n = oracle.requests
    p = oracle.success_rate / 100.0
    for summary in result.summaries:
        q = summary.success_rate / 100.0
        # Three standard deviations of the difference of two success rates over n requests,
        # plus what the tolerance may give away: nodes within it count as equally good.
        noise = 3.0 * math.sqrt((p * (1 - p) + q * (1 - q)) / n) * 100.0 + 0.01
        assert summary.success_rate <= oracle.success_rate + TOLERANCE + noise, summary.policy


def test_the_oracle_is_deterministic() -> None:
    built = scenario("maps", {MAPBOX: [{"at": 0, "rate_limit": 5}]}, duration_seconds=120)
    world = World(built, scenario_catalog(built), seed=3)
    runs = []
    for _ in range(2):
        nodes = world.nodes()
        runs.append(Engine(world, POLICIES[ORACLE](world, nodes), nodes).run())
    assert runs[0].first_node == runs[1].first_node
    assert runs[0].success == runs[1].success
