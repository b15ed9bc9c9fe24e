"""The simulator is deterministic for a seed, and what it reports comes from the run."""

from __future__ import annotations

import pytest

from sim.baselines import LiteLLMCooldown
from sim.engine import Engine, RunRecord
from sim.report import markdown_table
from sim.runner import POLICIES, run_scenario, scenario_catalog
from sim.scenario import Scenario, load_scenario
from sim.world import World

# The seed's Stripe scenario cut to 9 minutes: 4 minutes of the 15 % error rate.
STRIPE = load_scenario("stripe_error_rate").truncated(540)


def run(scenario: Scenario, policy: str, seed: int) -> RunRecord:
    world = World(scenario, scenario_catalog(scenario), seed)
    nodes = world.nodes()
    return Engine(world, POLICIES[policy](world, nodes), nodes).run()


def fingerprint(record: RunRecord) -> tuple[object, ...]:
    return (
        record.arrivals,
        record.first_node,
        record.success,
        record.first_ok,
        record.latency_ms,
        record.cost,
    )


@pytest.mark.parametrize("policy", list(POLICIES))
def test_same_seed_same_run(policy: str) -> None:
    assert fingerprint(run(STRIPE, policy, 7)) == fingerprint(run(STRIPE, policy, 7))


def test_another_seed_another_run() -> None:
    one, two = run(STRIPE, "switchyard", 7), run(STRIPE, "switchyard", 8)

    assert one.arrivals != two.arrivals
    assert one.success != two.success or one.latency_ms != two.latency_ms


def test_whole_table_is_reproducible() -> None:
    policies = ["primary-only", "switchyard"]

    first = markdown_table(run_scenario(STRIPE, policies, seed=3))
    again = markdown_table(run_scenario(STRIPE, policies, seed=3))

    assert first == again


def test_policies_see_the_same_traffic_and_provider_luck() -> None:
    # Common random numbers: the primary's answer to request i does not depend on the policy.
    healthy = STRIPE.healthy()
    a, b = run(healthy, "primary-only", 5), run(healthy, "envoy-outlier", 5)

    assert a.arrivals == b.arrivals
    assert a.first_node == b.first_node  # Envoy never ejects a healthy primary here
    assert a.first_ok == b.first_ok


def test_a_policy_change_shows_in_the_figures() -> None:
    result = run_scenario(STRIPE, ["primary-only", "litellm-cooldown", "switchyard"], seed=2)
    primary, litellm, switchyard = result.summaries
    table = markdown_table(result)

    # 4 minutes at 15 % errors with one retry on the same node: about 2.25 % of those fail.
    assert 97.0 < primary.success_rate < 99.5
    assert switchyard.success_rate > primary.success_rate
    assert switchyard.first_try_rate > litellm.first_try_rate > primary.first_try_rate
    assert f"{primary.success_rate:.3f}%" in table
    assert f"{switchyard.failed:,}" in table.split("switchyard")[1]


def test_a_baseline_parameter_change_moves_its_figures() -> None:
    world = World(STRIPE, scenario_catalog(STRIPE), 2)
    records = {}
    for allowed, cooldown in ((3, 5.0), (50, 5.0), (3, 30.0)):
        nodes = world.nodes()
        policy = LiteLLMCooldown(world.catalog.regular, allowed, cooldown)
        records[allowed, cooldown] = Engine(world, policy, nodes).run()
    default, lenient, long = records[3, 5.0], records[50, 5.0], records[3, 30.0]

    # Cooling down at all keeps first attempts off the failing primary...
    assert sum(default.first_ok) > sum(lenient.first_ok)
    # ...and long cooldowns leave moments with every deployment cooling down: no node at all.
    assert sum(long.success) < sum(default.success)
    assert None in long.first_node and None not in default.first_node


def test_a_scenario_change_moves_the_figures() -> None:
    points = STRIPE.nodes["stripe_primary_us_east"]
    harsher_points = (points[0].model_copy(update={"success_rate": 50.0}), *points[1:])
    harsher = STRIPE.model_copy(update={"nodes": {"stripe_primary_us_east": harsher_points}})

    mild = run_scenario(STRIPE, ["primary-only"], seed=2).summaries[0]
    harsh = run_scenario(harsher, ["primary-only"], seed=2).summaries[0]

    assert points[0].success_rate == 85.0
    assert harsh.success_rate < mild.success_rate - 3.0


def test_the_budget_is_a_hard_limit_for_every_policy() -> None:
    squeeze = load_scenario("twilio_budget_squeeze")
    budget = squeeze.budget.model_copy(update={"spent": 995.0})
    tight = squeeze.model_copy(update={"budget": budget}).truncated(300)

    for policy in ("primary-only", "switchyard"):
        record = run(tight, policy, 1)
        assert sum(record.cost) <= 5.0 + 1e-9
        assert not all(record.success)


def test_runs_are_independent_of_each_other() -> None:
    world = World(STRIPE, scenario_catalog(STRIPE), 9)
    first_nodes = world.nodes()
    Engine(world, POLICIES["round-robin"](world, first_nodes), first_nodes).run()
    nodes = world.nodes()
    after_other = Engine(world, POLICIES["switchyard"](world, nodes), nodes).run()

    assert fingerprint(after_other) == fingerprint(run(STRIPE, "switchyard", 9))
