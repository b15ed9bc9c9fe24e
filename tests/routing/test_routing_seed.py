"""The contract's worked examples on the default catalog, every field compared."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from routing_builders import NOW

from routing import (
    BudgetPeriod,
    BusinessCriticality,
    BusinessOutcome,
    EmergencyState,
    Exclusion,
    ExclusionReason,
    NodeHealth,
    Priority,
    RecoveryAction,
    RoutingDecision,
    RoutingRequest,
    RoutingSnapshot,
    Severity,
    Strategy,
    choose_recovery,
    decide,
    plan_recovery,
)

PAYMENT_REQUEST = RoutingRequest(
    service="stripe",
    operation="payment_processing",
    request_id="payment_req_12345",
    priority=Priority.CRITICAL,
    business_criticality=BusinessCriticality.REVENUE_BLOCKING,
    remaining_budget=1000.0,
    cost_per_request_limit=0.1,
    budget_period=BudgetPeriod.daily,
    current_latency=800.0,
    target_latency=300.0,
    current_throughput=50.0,
    target_throughput=200.0,
)


def stripe_emergency() -> EmergencyState:
    return EmergencyState(
        service="stripe",
        workflow_id="emergency:stripe",
        coordination_id="emergency_1692140200_g7h8i9",
        max_budget_override=5000.0,
        spent=0.0,
        deadline=NOW + timedelta(minutes=30),
    )


def test_standard_coordination_request(default_snapshot: RoutingSnapshot) -> None:
    decision = decide(PAYMENT_REQUEST, default_snapshot, NOW)

    primary = default_snapshot.nodes["stripe"][0]
    assert decision == RoutingDecision(
        node=primary,
        health=NodeHealth("stripe_primary_us_east", 95.0, 99.8, 150.0),
        strategy=Strategy.HEALTH_BASED,
        strategy_reason="critical_traffic",
        reason="Selected Stripe Primary (US East) using HEALTH_BASED strategy, health score: 95",
        estimated_cost=0.029,
        estimated_latency=150.0,
        estimated_success_rate=99.8,
        outcome=BusinessOutcome(
            estimated_cost_savings=0.071,
            estimated_performance_gain=81.25,
            risk_mitigation="high",
            customer_impact_reduction=99.8,
        ),
        confidence_score=95.0,
        emergency_applied=False,
        recovery_override_applied=False,
        exclusions=(
            Exclusion(
                "stripe_premium_emergency",
                ExclusionReason.EMERGENCY_ONLY,
                "emergency-only node and no emergency is active for stripe",
            ),
        ),
        effective_budget_remaining=1000.0,
        failure_probability=0.0,
    )
    assert primary.node_id == "stripe_primary_us_east"
    assert primary.region == "us-east-1"


def test_emergency_override_selects_premium_node(default_snapshot: RoutingSnapshot) -> None:
    snapshot = dataclasses.replace(default_snapshot, emergencies={"stripe": stripe_emergency()})
    request = RoutingRequest(service="stripe", operation="payment_processing")

    decision = decide(request, snapshot, NOW)

    premium = default_snapshot.nodes["stripe"][2]
    assert decision == RoutingDecision(
        node=premium,
        health=NodeHealth("stripe_premium_emergency", 98.0, 99.9, 100.0),
        strategy=Strategy.HYBRID_OPTIMIZATION,
        strategy_reason="emergency_override",
        reason="Selected Stripe Premium Emergency using HYBRID_OPTIMIZATION strategy, "
        "health score: 98",
        estimated_cost=0.15,
        estimated_latency=100.0,
        estimated_success_rate=99.9,
        outcome=BusinessOutcome(
            # Dearer than every regular node, so no savings against the dearest (0.032).
            estimated_cost_savings=0.0,
            estimated_performance_gain=0.0,
            risk_mitigation="high",
            customer_impact_reduction=99.9,
        ),
        confidence_score=98.0,
        emergency_applied=True,
        recovery_override_applied=False,
        exclusions=(),
        # The emergency cap (5000) replaces the daily budget while it is active.
        effective_budget_remaining=5000.0,
        failure_probability=0.0,
    )
    assert premium.node_id == "stripe_premium_emergency"


def test_expired_emergency_no_longer_admits_premium_node(
    default_snapshot: RoutingSnapshot,
) -> None:
    snapshot = dataclasses.replace(default_snapshot, emergencies={"stripe": stripe_emergency()})
    request = RoutingRequest(service="stripe", operation="payment_processing")

    decision = decide(request, snapshot, NOW + timedelta(minutes=30))

    assert decision.node.node_id == "stripe_primary_us_east"
    assert decision.strategy == Strategy.HYBRID_OPTIMIZATION
    assert decision.strategy_reason == "balanced"
    assert decision.emergency_applied is False


def test_backend_agent_error_plan(default_snapshot: RoutingSnapshot) -> None:
    choice = choose_recovery("performance_degradation", Severity.high, 2000.0, "moderate")
    plan = plan_recovery(
        choice,
        "samsara",
        frozenset({"samsara_primary"}),
        default_snapshot,
        NOW,
        operation="gps_tracking",
    )

    assert choice.strategy == Strategy.AVAILABILITY_FOCUSED
    assert choice.action == RecoveryAction.enable_multi_provider_redundancy
    assert plan.strategy == Strategy.AVAILABILITY_FOCUSED
    assert plan.action == RecoveryAction.enable_multi_provider_redundancy
    assert plan.selected.node_id == "samsara_backup"
    assert plan.selected.provider_name == "Samsara Backup"
    assert plan.selected.region == "us-west"
    assert plan.selected.success_rate == 98.8
    assert plan.selected.cost_per_request == 0.055
    assert plan.standby is not None
    assert plan.standby.node_id == "samsara_secondary_eu"
    assert plan.excluded_nodes == frozenset({"samsara_primary"})
    assert plan.estimated_cost == 0.061
    assert plan.estimated_latency == 300.0
    assert plan.restore_stages == (0.1, 0.5, 1.0)
    assert plan.stage_hold_seconds == 60
    assert plan.monitoring_seconds == 120
    assert plan.estimated_resolution_minutes == 5.0


def test_mapbox_rate_limit_fails_over_to_google_maps(default_snapshot: RoutingSnapshot) -> None:
    choice = choose_recovery("rate_limit_exceeded", Severity.high, 0.0, "moderate")
    plan = plan_recovery(choice, "maps", frozenset({"mapbox_primary"}), default_snapshot, NOW)

    assert choice.strategy == Strategy.COST_OPTIMIZED
    assert plan.action == RecoveryAction.cost_optimized_failover
    assert plan.selected.node_id == "google_maps"
    assert plan.standby is None
    assert plan.estimated_cost == 0.008
    assert plan.estimated_latency == 140.0
