"""businessContext: escalation to CRITICAL and riskMitigation's bar by customer impact."""

from __future__ import annotations

import dataclasses

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import RoutingRequest, Strategy, decide
from routing.business import escalate, escalation_reasons
from routing.outcome import risk_mitigation
from routing.types import (
    BusinessContext,
    CustomerImpact,
    OperationalPriority,
    Priority,
    TimeSensitivity,
)

THRESHOLD = 10_000.0
# Fast but less healthy first, healthy but slow second: LATENCY_OPTIMIZED and HEALTH_BASED
# disagree.
SNAPSHOT = snapshot_of(
    node("fast", health=80.0, latency=100.0),
    node("healthy", health=97.0, latency=300.0),
)
# A latency gap: without escalation the request is routed LATENCY_OPTIMIZED.
SLOW = RoutingRequest(service="svc", operation="op", current_latency=900.0, target_latency=300.0)


@pytest.mark.parametrize(
    ("context", "field"),
    [
        (BusinessContext(revenue_impact=THRESHOLD), "businessContext.revenueImpact"),
        (
            BusinessContext(operational_priority=OperationalPriority.high),
            "businessContext.operationalPriority",
        ),
        (
            BusinessContext(operational_priority=OperationalPriority.critical),
            "businessContext.operationalPriority",
        ),
        (
            BusinessContext(time_sensitivity=TimeSensitivity.urgent),
            "businessContext.timeSensitivity",
        ),
    ],
)
def test_each_field_escalates_the_request_as_critical(context: BusinessContext, field: str) -> None:
    plain = decide(escalate(SLOW, THRESHOLD), SNAPSHOT, NOW)
    request = escalate(dataclasses.replace(SLOW, business=context), THRESHOLD)

    decision = decide(request, SNAPSHOT, NOW)

    assert (plain.strategy, plain.node.node_id) == (Strategy.LATENCY_OPTIMIZED, "fast")
    assert request.priority is Priority.CRITICAL and request.escalated_by == (field,)
    assert (decision.strategy, decision.strategy_reason) == (
        Strategy.HEALTH_BASED,
        "critical_traffic",
    )
    assert decision.node.node_id == "healthy"


@pytest.mark.parametrize(
    "context",
    [
        BusinessContext(revenue_impact=THRESHOLD - 0.01),
        BusinessContext(operational_priority=OperationalPriority.normal),
        BusinessContext(time_sensitivity=TimeSensitivity.high),
        BusinessContext(customer_impact=CustomerImpact.critical),
    ],
)
def test_lower_stakes_do_not_escalate(context: BusinessContext) -> None:
    request = escalate(dataclasses.replace(SLOW, business=context), THRESHOLD)

    assert request.priority is Priority.NORMAL and request.escalated_by == ()
    assert decide(request, SNAPSHOT, NOW).strategy is Strategy.LATENCY_OPTIMIZED


def test_revenue_threshold_is_the_servers() -> None:
    context = BusinessContext(revenue_impact=5000.0)

    assert escalation_reasons(context, 5000.0) == ("businessContext.revenueImpact",)
    assert escalation_reasons(context, 5000.01) == ()


def test_seed_context_escalates_an_already_critical_request_and_says_why() -> None:
    seed = BusinessContext(
        revenue_impact=5000.0,
        customer_impact=CustomerImpact.moderate,
        operational_priority=OperationalPriority.high,
        time_sensitivity=TimeSensitivity.urgent,
    )
    request = RoutingRequest(
        service="svc", operation="op", priority=Priority.CRITICAL, business=seed
    )

    escalated = escalate(request, THRESHOLD)

    assert escalated.priority is Priority.CRITICAL
    assert escalated.escalated_by == (
        "businessContext.operationalPriority",
        "businessContext.timeSensitivity",
    )


@pytest.mark.parametrize(
    ("success", "health", "impact", "expected"),
    [
        # The seed's node: high for moderate (and unstated) impact, medium for severe.
        (99.8, 95.0, None, "high"),
        (99.8, 95.0, CustomerImpact.moderate, "high"),
        (99.8, 95.0, CustomerImpact.high, "medium"),
        (99.8, 95.0, CustomerImpact.severe, "medium"),
        (99.95, 96.0, CustomerImpact.critical, "high"),
        # A fair node: medium for moderate impact, high when few customers are exposed.
        (98.5, 80.0, CustomerImpact.moderate, "medium"),
        (98.5, 80.0, CustomerImpact.low, "high"),
        (98.5, 80.0, CustomerImpact.none, "high"),
        (98.5, 80.0, CustomerImpact.critical, "low"),
    ],
)
def test_customer_impact_sets_the_risk_mitigation_bar(
    success: float, health: float, impact: CustomerImpact | None, expected: str
) -> None:
    assert risk_mitigation(success, health, impact) == expected


def test_customer_impact_changes_the_decisions_risk_mitigation() -> None:
    snapshot = snapshot_of(node("a", health=95.0, success=99.8))
    request = RoutingRequest(service="svc", operation="op")
    severe = dataclasses.replace(
        request, business=BusinessContext(customer_impact=CustomerImpact.severe)
    )

    assert decide(request, snapshot, NOW).outcome.risk_mitigation == "high"
    assert decide(severe, snapshot, NOW).outcome.risk_mitigation == "medium"
