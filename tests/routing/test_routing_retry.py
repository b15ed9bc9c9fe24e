"""A caller's retry (routing.retry.decide_retry) and recovery holds that yield (decide)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from routing_builders import NOW, load_default_snapshot, node, snapshot_of

from routing.breaker import BreakerReason
from routing.decide import decide
from routing.eligibility import restore_bucket
from routing.retry import RECENT_EVIDENCE, decide_retry, unhealthy_because
from routing.types import (
    BreakerState,
    BusinessCriticality,
    ExclusionReason,
    NodeHealth,
    NoEligibleNode,
    Priority,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
)

PRIMARY = node("primary", health=95.0, success=99.8, cost=0.029)
SECONDARY = node("secondary", health=90.0, success=99.5, cost=0.032)
TERTIARY = node("tertiary", health=88.0, success=99.3, cost=0.04)


def live(
    target: str,
    *,
    score: float = 90.0,
    success: float = 99.5,
    latency: float = 200.0,
    state: BreakerState = BreakerState.CLOSED,
    p: float = 0.0,
    reason: str | None = None,
) -> NodeHealth:
    return NodeHealth(target, score, success, latency, state, p, reason)


def retry(*tried: str, request_id: str = "r-1") -> RoutingRequest:
    return RoutingRequest(
        service="svc",
        operation="op",
        request_id=request_id,
        preferred_strategy=Strategy.HEALTH_BASED,
        failed_providers=frozenset(tried),
    )


def held(*node_ids: str) -> dict[str, RoutingOverride]:
    return {"svc": RoutingOverride("svc", "recovery:svc:test", frozenset(node_ids))}


def chosen(request: RoutingRequest, snapshot: RoutingSnapshot) -> str:
    return decide_retry(request, snapshot, NOW).node.node_id


def test_a_retry_goes_to_a_healthy_node_it_has_not_tried() -> None:
    snapshot = snapshot_of(PRIMARY, SECONDARY, TERTIARY)

    decision = decide_retry(retry("primary"), snapshot, NOW)

    assert decision.node.node_id == "secondary"
    reasons = {e.node_id: e.reason for e in decision.exclusions}
    assert reasons == {"primary": ExclusionReason.FAILED_PROVIDER}


@pytest.mark.parametrize(
    ("figures", "why"),
    [
        (live("primary", success=93.3), "success rate 93.3% below the SLO 95%"),
        (live("primary", latency=2500.0), "latency 2500 ms above the SLO 2000 ms"),
        (live("primary", p=0.6), "an SLO breach predicted (p=0.6)"),
        (live("primary", state=BreakerState.HALF_OPEN), "breaker half-open"),
    ],
)
def test_a_retry_goes_back_to_a_healthy_node_rather_than_to_an_unhealthy_one(
    figures: NodeHealth, why: str
) -> None:
    # The secondary failed the first attempt; the primary is failing (or being probed).
    snapshot = snapshot_of(PRIMARY, SECONDARY, health={"primary": figures})

    decision = decide_retry(retry("secondary"), snapshot, NOW)

    assert decision.node.node_id == "secondary"
    primary = next(e for e in decision.exclusions if e.node_id == "primary")
    assert primary.reason is ExclusionReason.UNHEALTHY_FOR_RETRY
    assert primary.detail == f"a retry avoids it: {why}"


def test_an_untried_unhealthy_node_beats_a_tried_unhealthy_one() -> None:
    snapshot = snapshot_of(
        PRIMARY,
        SECONDARY,
        health={"primary": live("primary", success=90.0), "secondary": live("secondary", p=0.9)},
    )

    assert chosen(retry("secondary"), snapshot) == "primary"
    assert chosen(retry("primary"), snapshot) == "secondary"


def test_a_single_node_service_retries_its_node() -> None:
    assert chosen(retry("primary"), snapshot_of(PRIMARY)) == "primary"


def test_a_node_open_for_rate_limiting_takes_a_retry_but_no_first_attempt() -> None:
    limited = live(
        "primary", score=95.0, success=99.8, state=BreakerState.OPEN, reason="rate_limited"
    )
    snapshot = snapshot_of(PRIMARY, SECONDARY, TERTIARY, health={"primary": limited})
    first = RoutingRequest("svc", "op", preferred_strategy=Strategy.HEALTH_BASED)

    assert decide(first, snapshot, NOW).node.node_id == "secondary"
    assert chosen(retry("secondary"), snapshot) == "primary"
    assert unhealthy_because(PRIMARY, limited) is None


def test_a_node_open_for_failures_takes_no_retry() -> None:
    broken = live("primary", state=BreakerState.OPEN, reason=BreakerReason.FAILURE_RATE.value)
    snapshot = snapshot_of(PRIMARY, SECONDARY, health={"primary": broken})

    decision = decide_retry(retry("secondary"), snapshot, NOW)

    assert decision.node.node_id == "secondary"
    primary = next(e for e in decision.exclusions if e.node_id == "primary")
    assert primary.reason is ExclusionReason.BREAKER_OPEN


def test_a_retry_prefers_the_tried_node_to_one_a_recovery_holds_out() -> None:
    snapshot = snapshot_of(PRIMARY, SECONDARY, overrides=held("primary"))

    assert chosen(retry("secondary"), snapshot) == "secondary"


def test_a_retry_does_not_probe_a_node_a_recovery_is_restoring() -> None:
    # The primary is back to 30 % of traffic and this request is in the restored share, so
    # a first attempt may use it; a retry, the caller's last try, goes to the node it failed
    # on while that one is healthy, and takes the restoring node only when nothing else can.
    restoring = {
        "svc": RoutingOverride("svc", "recovery:svc:test", frozenset({"primary"}), None, 0.3)
    }
    request_id = next(f"r-{n}" for n in range(1000) if restore_bucket("svc", f"r-{n}") < 0.3)
    snapshot = snapshot_of(PRIMARY, SECONDARY, overrides=restoring)
    first = RoutingRequest(
        "svc", "op", request_id=request_id, preferred_strategy=Strategy.HEALTH_BASED
    )
    assert decide(first, snapshot, NOW).node.node_id == "primary"

    decision = decide_retry(retry("secondary", request_id=request_id), snapshot, NOW)

    assert decision.node.node_id == "secondary"
    primary = next(e for e in decision.exclusions if e.node_id == "primary")
    assert primary.reason is ExclusionReason.UNHEALTHY_FOR_RETRY
    assert "restoring it (30% of traffic so far)" in primary.detail

    broken = {"secondary": live("secondary", state=BreakerState.OPEN)}
    alone = snapshot_of(PRIMARY, SECONDARY, overrides=restoring, health=broken)
    assert chosen(retry("secondary", request_id=request_id), alone) == "primary"


def test_a_retry_takes_a_restoring_node_rather_than_go_back_to_a_failing_one() -> None:
    # The secondary failed the request and is below its SLO; the primary, restored to 30 %,
    # has passed its recovery's checks. Outside the restored share too, the retry goes to the
    # primary rather than back to the failing secondary.
    failing = {"secondary": live("secondary", success=93.0)}
    request_id = next(f"r-{n}" for n in range(1000) if restore_bucket("svc", f"r-{n}") >= 0.3)
    restoring = {
        "svc": RoutingOverride("svc", "recovery:svc:test", frozenset({"primary"}), None, 0.3)
    }
    snapshot = snapshot_of(PRIMARY, SECONDARY, overrides=restoring, health=failing)
    first = RoutingRequest(
        "svc", "op", request_id=request_id, preferred_strategy=Strategy.HEALTH_BASED
    )
    assert decide(first, snapshot, NOW).node.node_id == "secondary"

    assert chosen(retry("secondary", request_id=request_id), snapshot) == "primary"

    # Held out at 0 % with no outcomes behind its figures, the primary has nothing recent to
    # go by: the retry goes back.
    at_zero = snapshot_of(PRIMARY, SECONDARY, overrides=held("primary"), health=failing)
    assert chosen(retry("secondary", request_id=request_id), at_zero) == "secondary"
    # A healthy tried node still beats the restoring one (tier 2).
    healthy = snapshot_of(PRIMARY, SECONDARY, overrides=restoring)
    assert chosen(retry("secondary", request_id=request_id), healthy) == "secondary"


def test_a_held_node_serving_with_healthy_figures_takes_a_retry_before_a_failing_one() -> None:
    # The secondary is held out at 0 %, but it served while the primary's breaker was open
    # (the hold yielded) and its figures are healthy on 100 outcomes. The primary is probing
    # (half-open) and just failed this request: the retry goes to the secondary.
    def health(observations: int, success: float = 99.4) -> dict[str, NodeHealth]:
        return {
            "primary": live("primary", score=40.0, success=80.0, state=BreakerState.HALF_OPEN),
            "secondary": replace(live("secondary", success=success), observations=observations),
        }

    def retried(observations: int, success: float = 99.4) -> str:
        snapshot = snapshot_of(
            PRIMARY, SECONDARY, overrides=held("secondary"), health=health(observations, success)
        )
        first = RoutingRequest("svc", "op", request_id="r-1")
        assert decide(first, snapshot, NOW).node.node_id == "primary"  # the hold applies
        return chosen(retry("primary"), snapshot)

    assert retried(100) == "secondary"
    assert retried(RECENT_EVIDENCE) == "secondary"
    # Too few outcomes, or unhealthy ones (stale failures), vouch for nothing: back it goes.
    assert retried(RECENT_EVIDENCE - 1) == "primary"
    assert retried(100, success=90.0) == "primary"


def test_a_hold_yields_when_it_leaves_nothing_else() -> None:
    # The secondary's breaker is open: the primary, held by a recovery, is all there is.
    snapshot = snapshot_of(
        PRIMARY,
        SECONDARY,
        overrides=held("primary"),
        health={"secondary": live("secondary", state=BreakerState.OPEN)},
    )
    request = RoutingRequest("svc", "op", preferred_strategy=Strategy.HEALTH_BASED)

    decision = decide(request, snapshot, NOW)

    assert decision.node.node_id == "primary"
    assert not decision.recovery_override_applied
    assert chosen(retry("secondary"), snapshot) == "primary"
    with pytest.raises(NoEligibleNode) as refused:
        decide(request, snapshot, NOW, hold_yields=False)
    reasons = {e.node_id: e.reason for e in refused.value.exclusions}
    assert reasons == {
        "primary": ExclusionReason.EXCLUDED_BY_RECOVERY,
        "secondary": ExclusionReason.BREAKER_OPEN,
    }


def test_a_hold_does_not_yield_a_node_whose_breaker_is_open() -> None:
    snapshot = snapshot_of(
        PRIMARY,
        SECONDARY,
        overrides=held("primary", "secondary"),
        health={"primary": live("primary", state=BreakerState.OPEN)},
    )
    request = RoutingRequest("svc", "op")

    assert decide(request, snapshot, NOW).node.node_id == "secondary"
    every = snapshot_of(
        PRIMARY,
        SECONDARY,
        overrides=held("primary", "secondary"),
        health={n: live(n, state=BreakerState.OPEN) for n in ("primary", "secondary")},
    )
    with pytest.raises(NoEligibleNode) as refused:
        decide(request, every, NOW)
    # The exclusions name the hold, which was in effect.
    assert {e.reason for e in refused.value.exclusions} == {ExclusionReason.EXCLUDED_BY_RECOVERY}


def test_the_documented_example_goes_back_to_the_stripe_secondary() -> None:
    catalog = load_default_snapshot()
    snapshot = RoutingSnapshot(
        nodes=catalog.nodes,
        budgets=catalog.budgets,
        health={"stripe_primary_us_east": NodeHealth("stripe_primary_us_east", 40.0, 93.3, 150.0)},
    )
    request = RoutingRequest(
        service="stripe",
        operation="payment_processing",
        priority=Priority.CRITICAL,
        business_criticality=BusinessCriticality.REVENUE_BLOCKING,
        cost_per_request_limit=0.1,
        failed_providers=frozenset({"stripe_secondary_us_west"}),
    )

    decision = decide_retry(request, snapshot, NOW)

    assert decision.node.node_id == "stripe_secondary_us_west"
    assert decision.strategy is Strategy.HEALTH_BASED
    reasons = {e.node_id: (e.reason, e.detail) for e in decision.exclusions}
    assert reasons["stripe_primary_us_east"] == (
        ExclusionReason.UNHEALTHY_FOR_RETRY,
        "a retry avoids it: success rate 93.3% below the SLO 95%",
    )
