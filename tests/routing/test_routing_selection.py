"""Automatic strategy selection: every rule, in precedence order."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import (
    BudgetPeriod,
    BudgetState,
    BusinessCriticality,
    EmergencyState,
    Priority,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
    choose_strategy,
    decide,
)

NODES = (
    node("cheap", cost=0.01),
    node("dear", cost=0.02),
    node("reserve", cost=0.001, emergency_only=True),
)
EMERGENCY = EmergencyState("svc", "emergency:svc", "c1", 100.0, 0.0, NOW + timedelta(hours=1))
OVERRIDE = RoutingOverride("svc", "recovery:svc:s1", frozenset(), Strategy.LATENCY_OPTIMIZED)


def budget(limit: float, spent: float) -> BudgetState:
    return BudgetState("svc", BudgetPeriod.daily, limit, spent)


def request(**fields: Any) -> RoutingRequest:
    return RoutingRequest(service="svc", operation="op", **fields)


def choose(
    req: RoutingRequest, override_in_effect: bool = False, **snapshot: Any
) -> tuple[Strategy, str]:
    return choose_strategy(req, snapshot_of(*NODES, **snapshot), NOW, override_in_effect)


def test_client_preference_wins_over_everything() -> None:
    req = request(preferred_strategy=Strategy.COST_OPTIMIZED, priority=Priority.CRITICAL)

    got = choose(req, True, emergencies={"svc": EMERGENCY}, overrides={"svc": OVERRIDE})

    assert got == (Strategy.COST_OPTIMIZED, "client_preference")


def test_active_emergency_uses_hybrid() -> None:
    got = choose(request(priority=Priority.CRITICAL), True, emergencies={"svc": EMERGENCY})

    assert got == (Strategy.HYBRID_OPTIMIZATION, "emergency_override")


def test_inactive_emergency_is_ignored() -> None:
    spent = EmergencyState("svc", "e", "c", 100.0, 100.0, NOW + timedelta(hours=1))

    assert choose(request(), emergencies={"svc": spent})[1] == "balanced"


def test_recovery_override_strategy_applies_when_in_effect() -> None:
    req = request(priority=Priority.CRITICAL)

    assert choose(req, True, overrides={"svc": OVERRIDE}) == (
        Strategy.LATENCY_OPTIMIZED,
        "recovery_override",
    )
    assert choose(req, False, overrides={"svc": OVERRIDE})[1] == "critical_traffic"


def test_override_without_strategy_falls_through() -> None:
    plain = RoutingOverride("svc", "recovery:svc:s1", frozenset({"dear"}))

    assert choose(request(), True, overrides={"svc": plain})[1] == "balanced"


@pytest.mark.parametrize(
    "req",
    [
        request(priority=Priority.CRITICAL),
        request(business_criticality=BusinessCriticality.REVENUE_BLOCKING),
    ],
)
def test_critical_traffic_is_health_based(req: RoutingRequest) -> None:
    got = choose(req, budgets={"svc": budget(100.0, 99.0)})

    assert got == (Strategy.HEALTH_BASED, "critical_traffic")


def test_server_budget_below_a_fifth_is_pressure() -> None:
    assert choose(request(), budgets={"svc": budget(100.0, 80.01)}) == (
        Strategy.COST_OPTIMIZED,
        "budget_pressure",
    )
    assert choose(request(), budgets={"svc": budget(100.0, 80.0)})[1] == "balanced"


def test_client_budget_below_a_thousand_cheapest_requests_is_pressure() -> None:
    # The cheapest regular node costs 0.01; the emergency-only 0.001 does not count.
    assert choose(request(remaining_budget=9.99))[1] == "budget_pressure"
    assert choose(request(remaining_budget=10.0))[1] == "balanced"


def test_client_budget_pressure_ignores_disabled_nodes_and_needs_a_regular_node() -> None:
    disabled_cheapest = (node("off", cost=0.001, enabled=False), node("on", cost=0.01))
    only_reserve = (node("reserve", cost=0.01, emergency_only=True),)
    req = request(remaining_budget=5.0)

    assert choose_strategy(req, snapshot_of(*disabled_cheapest), NOW, False)[1] == (
        "budget_pressure"
    )
    assert choose_strategy(req, snapshot_of(*only_reserve), NOW, False)[1] == "balanced"


def test_latency_gap_above_one_and_a_half_times_target() -> None:
    assert choose(request(current_latency=451.0, target_latency=300.0)) == (
        Strategy.LATENCY_OPTIMIZED,
        "latency_gap",
    )
    assert choose(request(current_latency=450.0, target_latency=300.0))[1] == "balanced"
    assert choose(request(current_latency=900.0))[1] == "balanced"


def test_throughput_gap_below_half_of_target() -> None:
    assert choose(request(current_throughput=49.0, target_throughput=100.0)) == (
        Strategy.AVAILABILITY_FOCUSED,
        "throughput_gap",
    )
    assert choose(request(current_throughput=50.0, target_throughput=100.0))[1] == "balanced"


def test_rules_apply_in_order() -> None:
    both_gaps = request(
        remaining_budget=1.0,
        current_latency=1000.0,
        target_latency=100.0,
        current_throughput=1.0,
        target_throughput=100.0,
    )
    assert choose(both_gaps)[1] == "budget_pressure"
    no_budget_issue = request(
        current_latency=1000.0,
        target_latency=100.0,
        current_throughput=1.0,
        target_throughput=100.0,
    )
    assert choose(no_budget_issue)[1] == "latency_gap"


def test_balanced_by_default() -> None:
    assert choose(request()) == (Strategy.HYBRID_OPTIMIZATION, "balanced")


def test_decide_reports_the_rule(default_snapshot: RoutingSnapshot) -> None:
    req = RoutingRequest(
        service="twilio", operation="sms", current_latency=900.0, target_latency=200.0
    )

    decision = decide(req, default_snapshot, NOW)

    assert decision.strategy == Strategy.LATENCY_OPTIMIZED
    assert decision.strategy_reason == "latency_gap"
    assert decision.node.node_id == "twilio_primary_us_east"
