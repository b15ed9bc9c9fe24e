"""The recovery-strategy table and the figures of a recovery plan."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from routing_builders import NOW, node, snapshot_of

from routing import (
    HEDGE_FRACTION,
    EmergencyState,
    NodeHealth,
    NoEligibleNode,
    RecoveryAction,
    RecoveryChoice,
    RoutingOverride,
    RoutingSnapshot,
    Severity,
    Strategy,
    choose_recovery,
    plan_recovery,
    strands_service,
)
from routing.types import ServiceRules

A = Strategy.AVAILABILITY_FOCUSED
COST = Strategy.COST_OPTIMIZED
HEALTH = Strategy.HEALTH_BASED
LATENCY = Strategy.LATENCY_OPTIMIZED
REDUNDANCY = RecoveryAction.enable_multi_provider_redundancy
FAILOVER = RecoveryAction.failover_to_backup
CHEAPER = RecoveryAction.cost_optimized_failover
RETRY = RecoveryAction.retry_with_backoff
FASTER = RecoveryAction.latency_failover
LOW, MEDIUM, HIGH, CRITICAL = Severity.low, Severity.medium, Severity.high, Severity.critical


@pytest.mark.parametrize(
    ("error_type", "severity", "revenue", "impact", "strategy", "action"),
    [
        # Quota errors: cheapest other provider, whatever the severity.
        ("rate_limit_exceeded", CRITICAL, 1e6, "critical", COST, CHEAPER),
        ("quota_exceeded", LOW, 0.0, "minimal", COST, CHEAPER),
        # Minor transient errors: keep the route and retry.
        ("timeout", LOW, 1e6, "severe", HEALTH, RETRY),
        ("connection_error", MEDIUM, 0.0, "moderate", HEALTH, RETRY),
        ("transient_error", LOW, 0.0, "moderate", HEALTH, RETRY),
        ("network_error", MEDIUM, 0.0, "moderate", HEALTH, RETRY),
        # Minor slowdowns with little money at stake: move to the fastest node.
        ("performance_degradation", MEDIUM, 9999.99, "severe", LATENCY, FASTER),
        ("latency_spike", LOW, 0.0, "moderate", LATENCY, FASTER),
        ("latency_spike", LOW, 10000.0, "moderate", A, FAILOVER),
        # Major incidents: redundancy.
        ("performance_degradation", HIGH, 2000.0, "moderate", A, REDUNDANCY),
        ("latency_spike", CRITICAL, 0.0, "minimal", A, REDUNDANCY),
        ("provider_outage", HIGH, 10000.0, "moderate", A, REDUNDANCY),
        ("provider_outage", CRITICAL, 0.0, "severe", A, REDUNDANCY),
        ("timeout", HIGH, 0.0, "critical", A, REDUNDANCY),
        # Everything else: plain failover.
        ("provider_outage", HIGH, 9999.0, "moderate", A, FAILOVER),
        ("timeout", CRITICAL, 0.0, "moderate", A, FAILOVER),
        ("authentication_error", LOW, 1e6, "critical", A, FAILOVER),
    ],
)
def test_recovery_table(
    error_type: str,
    severity: Severity,
    revenue: float,
    impact: str,
    strategy: Strategy,
    action: RecoveryAction,
) -> None:
    choice = choose_recovery(error_type, severity, revenue, impact)

    assert (choice.strategy, choice.action) == (strategy, action)
    assert choice.rule


NODES = (
    node("primary", health=95, success=99.8, latency=150, cost=0.02),
    node("second", health=90, success=99.5, latency=180, cost=0.03),
    node("third", health=85, success=98.9, latency=120, cost=0.01),
)
SNAP = snapshot_of(*NODES)
PRIMARY_FAILED = frozenset({"primary"})


def test_failover_plan() -> None:
    choice = choose_recovery("provider_outage", Severity.high, 0.0, "moderate")

    plan = plan_recovery(choice, "svc", PRIMARY_FAILED | {"elsewhere"}, SNAP, NOW)

    assert plan.action == FAILOVER
    assert plan.selected.node_id == "second"
    assert plan.standby is None
    # Failed providers of other services are not this service's exclusions.
    assert plan.excluded_nodes == PRIMARY_FAILED
    assert (plan.estimated_cost, plan.estimated_latency) == (0.03, 180.0)
    assert plan.restore_stages == (0.1, 0.5, 1.0)
    assert plan.estimated_resolution_minutes == 5.0


def test_redundancy_plan_hedges_to_the_runner_up() -> None:
    choice = choose_recovery("latency_spike", Severity.critical, 0.0, "moderate")
    snapshot = dataclasses.replace(
        SNAP, rules={"svc": ServiceRules(idempotent=frozenset({"read"}))}
    )

    plan = plan_recovery(choice, "svc", PRIMARY_FAILED, snapshot, NOW, operation="read")

    assert plan.selected.node_id == "second"
    assert plan.standby is not None and plan.standby.node_id == "third"
    assert plan.estimated_cost == round(0.03 + HEDGE_FRACTION * 0.01, 6) == 0.031
    assert plan.estimated_latency == 180.0


@pytest.mark.parametrize("operation", ["write", ""])
def test_redundancy_plan_counts_no_hedge_for_what_is_not_idempotent(operation: str) -> None:
    """Only idempotent operations are hedged, so only they pay for the standby's share."""
    choice = choose_recovery("latency_spike", Severity.critical, 0.0, "moderate")
    snapshot = dataclasses.replace(
        SNAP, rules={"svc": ServiceRules(idempotent=frozenset({"read"}))}
    )

    plan = plan_recovery(choice, "svc", PRIMARY_FAILED, snapshot, NOW, operation=operation)

    assert plan.standby is not None and plan.standby.node_id == "third"
    assert plan.estimated_cost == 0.03


def test_redundancy_without_a_runner_up_has_no_standby() -> None:
    choice = choose_recovery("latency_spike", Severity.critical, 0.0, "moderate")

    plan = plan_recovery(choice, "svc", frozenset({"primary", "third"}), SNAP, NOW)

    assert plan.standby is None
    assert (plan.estimated_cost, plan.estimated_latency) == (0.03, 180.0)


def test_retry_plan_keeps_the_route() -> None:
    choice = choose_recovery("timeout", Severity.low, 0.0, "moderate")

    plan = plan_recovery(choice, "svc", PRIMARY_FAILED, SNAP, NOW)

    assert plan.selected.node_id == "primary"
    assert plan.standby is None
    assert plan.excluded_nodes == frozenset()
    assert plan.restore_stages == ()
    assert plan.monitoring_seconds == 60
    assert plan.estimated_resolution_minutes == 1.0


def test_latency_failover_plan() -> None:
    choice = choose_recovery("latency_spike", Severity.medium, 0.0, "moderate")

    plan = plan_recovery(choice, "svc", frozenset({"third"}), SNAP, NOW)

    assert plan.selected.node_id == "primary"
    assert plan.estimated_latency == 150.0


def test_plan_uses_live_latency() -> None:
    live = {"third": NodeHealth("third", 85, 99.0, 700.0)}
    rules = {"svc": ServiceRules(idempotent=frozenset({"read"}))}
    snap = dataclasses.replace(SNAP, health=live, rules=rules)
    choice = choose_recovery("latency_spike", Severity.critical, 0.0, "moderate")

    # A hedged request may be answered by the standby: its live latency is promised.
    assert (
        plan_recovery(choice, "svc", PRIMARY_FAILED, snap, NOW, operation="read").estimated_latency
        == 700
    )
    # Unhedged, the selected node answers alone.
    assert (
        plan_recovery(choice, "svc", PRIMARY_FAILED, snap, NOW, operation="write").estimated_latency
        == 180
    )


def test_plan_ignores_the_existing_override() -> None:
    held = RoutingOverride("svc", "recovery:svc:old", frozenset({"second", "third"}))
    snap = dataclasses.replace(SNAP, overrides={"svc": held})
    choice = choose_recovery("provider_outage", Severity.high, 0.0, "moderate")

    plan = plan_recovery(choice, "svc", PRIMARY_FAILED, snap, NOW)

    assert plan.selected.node_id == "second"


def test_plan_admits_emergency_nodes_only_during_an_emergency(
    default_snapshot: RoutingSnapshot,
) -> None:
    failed = frozenset({"stripe_primary_us_east", "stripe_secondary_us_west"})
    choice = RecoveryChoice(Strategy.AVAILABILITY_FOCUSED, FAILOVER, "test")
    emergency = EmergencyState("stripe", "e", "c", 5000.0, 0.0, NOW + timedelta(minutes=30))

    with pytest.raises(NoEligibleNode) as raised:
        plan_recovery(choice, "stripe", failed, default_snapshot, NOW)
    plan = plan_recovery(
        choice,
        "stripe",
        failed,
        dataclasses.replace(default_snapshot, emergencies={"stripe": emergency}),
        NOW,
    )

    assert len(raised.value.exclusions) == 3
    assert plan.selected.node_id == "stripe_premium_emergency"


def test_a_monitor_hold_that_would_leave_no_node_is_refused() -> None:
    held = RoutingOverride("svc", "recovery:svc:primary", frozenset({"primary", "second"}))
    snap = dataclasses.replace(SNAP, overrides={"svc": held})

    # Two of three held already: the third is the last one.
    assert strands_service("svc", frozenset({"third"}), snap, NOW)
    # Holding an already held node adds nothing.
    assert not strands_service("svc", frozenset({"second"}), snap, NOW)
    # Without the running holds, one node out of three leaves two.
    assert not strands_service("svc", frozenset({"third"}), SNAP, NOW)
    # Disabled nodes are no refuge.
    disabled = snapshot_of(NODES[0], NODES[1], dataclasses.replace(NODES[2], enabled=False))
    assert strands_service("svc", frozenset({"primary", "second"}), disabled, NOW)
