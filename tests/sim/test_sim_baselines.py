"""Baseline policies: round robin, LiteLLM-style cooldown and Envoy-style outlier ejection."""

from __future__ import annotations

from sim.baselines import EnvoyOutlierEjection, LiteLLMCooldown, PrimaryOnly, RoundRobin
from sim.policy import Call
from sim.world import Attempt, AttemptKind, load_catalog

NODES = load_catalog("stripe").regular  # primary, secondary
PRIMARY, SECONDARY = (n.node_id for n in NODES)
FAIL = Attempt(AttemptKind.ERROR, 100.0, 0.029)
TIMEOUT = Attempt(AttemptKind.TIMEOUT, 5000.0, 0.0)
LIMITED = Attempt(AttemptKind.RATE_LIMITED, 25.0, 0.0)


def test_baselines_use_only_regular_nodes() -> None:
    assert [n.node_id for n in NODES] == ["stripe_primary_us_east", "stripe_secondary_us_west"]


def test_primary_only_retries_on_the_primary() -> None:
    policy = PrimaryOnly(NODES)

    assert policy.choose(Call(0, 0.0)) == PRIMARY
    assert policy.choose(Call(0, 0.1, tried=(PRIMARY,))) == PRIMARY


def test_round_robin_rotates_and_a_retry_skips_the_tried_node() -> None:
    policy = RoundRobin(NODES)

    picks = [policy.choose(Call(i, float(i))) for i in range(4)]
    retry = policy.choose(Call(4, 4.0, tried=(PRIMARY,)))

    assert picks == [PRIMARY, SECONDARY, PRIMARY, SECONDARY]
    assert retry == SECONDARY


def test_litellm_cools_a_deployment_down_after_the_allowed_fails() -> None:
    policy = LiteLLMCooldown(NODES, allowed_fails=3, cooldown_seconds=5.0)

    for t in (1.0, 2.0, 3.0):
        policy.observe(PRIMARY, FAIL, t)
    still_in = policy.choose(Call(0, 3.5))
    policy.observe(PRIMARY, TIMEOUT, 4.0)  # the fourth failure within the 5 s memory

    assert still_in == PRIMARY
    assert policy.choose(Call(1, 4.5)) == SECONDARY
    assert policy.choose(Call(2, 9.0)) == PRIMARY  # cooldown over


def test_litellm_forgets_failures_after_the_cooldown_time() -> None:
    policy = LiteLLMCooldown(NODES, allowed_fails=3, cooldown_seconds=5.0)

    for t in (0.0, 1.0, 2.0):
        policy.observe(PRIMARY, FAIL, t)
    policy.observe(PRIMARY, FAIL, 8.0)  # 6 s after the last failure: the count restarted

    assert policy.choose(Call(0, 8.5)) == PRIMARY


def test_litellm_counts_rate_limits_and_has_nothing_when_all_cool_down() -> None:
    policy = LiteLLMCooldown(NODES, allowed_fails=0, cooldown_seconds=5.0)

    policy.observe(PRIMARY, LIMITED, 1.0)
    policy.observe(SECONDARY, FAIL, 1.0)

    assert policy.choose(Call(0, 2.0)) is None


def test_envoy_ejects_after_five_consecutive_failures_for_growing_times() -> None:
    policy = EnvoyOutlierEjection(NODES)

    for t in range(5):
        policy.observe(PRIMARY, FAIL, float(t))
    first_out = policy.choose(Call(0, 5.0))
    policy.tick(30.0)
    during = policy.choose(Call(1, 30.0))
    policy.tick(40.0)  # ejected at 4 s for 30 s: back at the analysis sweep at 40 s
    back = policy.choose(Call(2, 40.5))
    for t in range(41, 46):
        policy.observe(PRIMARY, TIMEOUT, float(t))
    policy.tick(100.0)
    second_still_out = policy.choose(Call(3, 100.0))  # second ejection: 60 s, until 105 s
    policy.tick(110.0)

    assert (first_out, during, back) == (SECONDARY, SECONDARY, PRIMARY)
    assert second_still_out == SECONDARY
    assert policy.choose(Call(4, 110.0)) == PRIMARY


def test_envoy_does_not_count_rate_limits_as_5xx() -> None:
    policy = EnvoyOutlierEjection(NODES)

    for t in range(4):
        policy.observe(PRIMARY, FAIL, float(t))
    policy.observe(PRIMARY, LIMITED, 4.0)  # a 429 resets the streak
    for t in range(5, 9):
        policy.observe(PRIMARY, FAIL, float(t))

    assert policy.choose(Call(0, 9.0)) == PRIMARY


def test_envoy_ejects_at_most_one_of_two_hosts() -> None:
    policy = EnvoyOutlierEjection(NODES)

    for t in range(5):
        policy.observe(PRIMARY, FAIL, float(t))
        policy.observe(SECONDARY, FAIL, float(t))

    assert policy.choose(Call(0, 6.0)) == SECONDARY
    assert policy.choose(Call(0, 6.0, tried=(SECONDARY,))) == SECONDARY
