"""Business outcome and confidence formulas."""

from __future__ import annotations

from typing import Any

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import (
    BusinessOutcome,
    NodeHealth,
    RoutingRequest,
    Strategy,
    business_outcome,
    confidence_score,
    decide,
    reference_cost,
    risk_mitigation,
)

NODES = (
    node("cheap", cost=0.01),
    node("dear", cost=0.04),
    node("off", cost=0.09, enabled=False),
    node("reserve", cost=0.2, emergency_only=True),
)


def request(**fields: Any) -> RoutingRequest:
    return RoutingRequest(service="svc", operation="op", **fields)


def test_reference_cost_is_the_limit_when_given() -> None:
    assert reference_cost(request(cost_per_request_limit=0.5), NODES) == 0.5


def test_reference_cost_is_the_dearest_regular_enabled_node() -> None:
    assert reference_cost(request(), NODES) == 0.04
    assert reference_cost(request(), NODES[2:]) is None


def test_outcome_figures() -> None:
    live = NodeHealth("cheap", 80.0, 99.0, 250.0, failure_probability=0.25)

    outcome = business_outcome(request(current_latency=200.0), NODES[0], live, NODES)

    assert outcome == BusinessOutcome(
        estimated_cost_savings=0.03,
        # Slower than the caller's current 200 ms: reported as a loss.
        estimated_performance_gain=-25.0,
        risk_mitigation="medium",
        customer_impact_reduction=74.25,
    )


def test_savings_never_negative_and_rounded() -> None:
    live = NodeHealth("reserve", 90.0, 99.0, 100.0)

    dear = business_outcome(request(), NODES[3], live, NODES)
    rounded = business_outcome(request(cost_per_request_limit=0.3), NODES[3], live, NODES)

    assert dear.estimated_cost_savings == 0.0
    assert rounded.estimated_cost_savings == 0.1  # 0.3 - 0.2 is 0.09999999999999998 unrounded


@pytest.mark.parametrize("current", [None, 0.0, -5.0])
def test_no_performance_gain_without_a_current_latency(current: float | None) -> None:
    live = NodeHealth("cheap", 90.0, 99.0, 100.0)

    outcome = business_outcome(request(current_latency=current), NODES[0], live, NODES)

    assert outcome.estimated_performance_gain == 0.0


def test_performance_gain_rounds_to_two_decimals() -> None:
    live = NodeHealth("cheap", 90.0, 99.0, 100.0)

    outcome = business_outcome(request(current_latency=300.0), NODES[0], live, NODES)

    assert outcome.estimated_performance_gain == 66.67


@pytest.mark.parametrize(
    ("success", "health", "risk"),
    [
        (99.5, 90.0, "high"),
        (99.49, 95.0, "medium"),
        (99.9, 89.9, "medium"),
        (98.0, 75.0, "medium"),
        (97.99, 99.0, "low"),
        (99.9, 74.9, "low"),
    ],
)
def test_risk_mitigation_tiers(success: float, health: float, risk: str) -> None:
    assert risk_mitigation(success, health) == risk


@pytest.mark.parametrize(
    ("health", "failure", "score"),
    [(95.0, 0.0, 95.0), (90.0, 0.1, 81.0), (80.0, 1.0, 0.0), (120.0, 0.0, 100.0), (-3, 0, 0.0)],
)
def test_confidence_score(health: float, failure: float, score: float) -> None:
    assert confidence_score(health, failure) == score
    assert isinstance(confidence_score(health, failure), float)


def test_decision_uses_the_live_figures() -> None:
    live = {"dear": NodeHealth("dear", 96.0, 99.7, 90.0, failure_probability=0.05)}
    snapshot = snapshot_of(*NODES, health=live)
    req = request(
        preferred_strategy=Strategy.LATENCY_OPTIMIZED,
        current_latency=120.0,
        cost_per_request_limit=0.1,
    )

    decision = decide(req, snapshot, NOW)

    assert decision.node.node_id == "dear"
    assert decision.estimated_cost == 0.04
    assert decision.estimated_latency == 90.0
    assert decision.estimated_success_rate == 99.7
    assert decision.failure_probability == 0.05
    assert decision.confidence_score == 91.0  # round(96 * 0.95) = round(91.2)
    assert decision.outcome == BusinessOutcome(0.06, 25.0, "high", 94.72)  # 99.7 * 0.95 = 94.715
    assert decision.reason == "Selected Dear using LATENCY_OPTIMIZED strategy, health score: 96"
