"""What an error report's retryAttempts and recoveryStrategyId do to its recovery, and how
the resolution estimate is made (docs/ROUTING.md, Recovery plans)."""

from __future__ import annotations

import pytest
from routing_builders import NOW, node, snapshot_of

from routing.recovery import (
    DEFAULT_RETRY_BUDGET,
    PlanStatus,
    RecoveryAction,
    RecoveryTemplate,
    Severity,
    choose_recovery,
    handled_severity,
    plan_recovery,
    resolve_plan,
    retries_spent,
)
from routing.types import Strategy

SNAP = snapshot_of(
    node("primary", health=95, success=99.8, latency=150, cost=0.02),
    node("second", health=90, success=99.5, latency=180, cost=0.03),
    node("third", health=85, success=99.0, latency=120, cost=0.01),
)
FAILED = frozenset({"primary"})
CHEAP_PLAN = RecoveryTemplate(
    "cheap", Strategy.COST_OPTIMIZED, RecoveryAction.cost_optimized_failover
)
RETRY_PLAN = RecoveryTemplate(
    "patient", Strategy.HEALTH_BASED, RecoveryAction.retry_with_backoff, max_retries=1
)


def _choose(
    error_type: str, severity: Severity, attempts: int, template: RecoveryTemplate | None = None
) -> tuple[Severity, RecoveryAction, str]:
    budget = template.retry_budget if template else DEFAULT_RETRY_BUDGET
    handled = handled_severity(severity, severity, attempts, budget)
    spent = retries_spent(attempts, budget)
    choice = choose_recovery(error_type, handled, 0.0, "moderate", spent, template)
    return handled, choice.action, choice.rule


# ---- retryAttempts ----


@pytest.mark.parametrize(
    ("severity", "raised"),
    [
        (Severity.low, Severity.medium),
        (Severity.medium, Severity.high),
        (Severity.high, Severity.critical),
        (Severity.critical, Severity.critical),
    ],
)
def test_spent_retries_raise_the_severity_one_step(severity: Severity, raised: Severity) -> None:
    under = handled_severity(severity, severity, DEFAULT_RETRY_BUDGET - 1, DEFAULT_RETRY_BUDGET)
    spent = handled_severity(severity, severity, DEFAULT_RETRY_BUDGET, DEFAULT_RETRY_BUDGET)

    assert under is severity
    assert spent is raised


def test_the_raise_starts_from_the_report_not_from_an_earlier_raise() -> None:
    # A recovery already at high (raised from medium): another spent medium report stays high.
    assert handled_severity(Severity.high, Severity.medium, 5, 3) is Severity.high


def test_spent_retries_turn_a_minor_slowdown_into_a_major_incident() -> None:
    assert _choose("performance_degradation", Severity.medium, 0)[1:] == (
        RecoveryAction.latency_failover,
        "minor_slowdown",
    )
    assert _choose("performance_degradation", Severity.medium, 3)[1:] == (
        RecoveryAction.enable_multi_provider_redundancy,
        "major_incident",
    )


def test_spent_retries_rule_out_retry_with_backoff() -> None:
    assert _choose("timeout", Severity.low, 2)[1] is RecoveryAction.retry_with_backoff
    handled, action, rule = _choose("timeout", Severity.low, 3)
    assert handled is Severity.medium  # still minor: the table alone would retry again
    assert (action, rule) == (RecoveryAction.failover_to_backup, "retries_spent")
    plan = plan_recovery(
        choose_recovery("timeout", handled, 0.0, "moderate", True), "svc", FAILED, SNAP, NOW
    )
    assert plan.selected.node_id != "primary"
    assert plan.excluded_nodes == FAILED


# ---- recoveryStrategyId: catalog recovery plans ----


def test_a_plan_pins_strategy_and_action() -> None:
    _, action, rule = _choose("provider_outage", Severity.critical, 0, CHEAP_PLAN)
    assert (action, rule) == (RecoveryAction.cost_optimized_failover, "plan:cheap")
    choice = choose_recovery(
        "provider_outage", Severity.critical, 0.0, "moderate", False, CHEAP_PLAN
    )
    plan = plan_recovery(choice, "svc", FAILED, SNAP, NOW, template=CHEAP_PLAN)
    assert plan.strategy is Strategy.COST_OPTIMIZED
    assert plan.selected.node_id == "third"  # the cheapest; the table would take "second"
    table = choose_recovery("provider_outage", Severity.critical, 0.0, "moderate")
    assert plan_recovery(table, "svc", FAILED, SNAP, NOW).selected.node_id == "second"


def test_a_retry_plan_gives_way_once_its_own_retry_budget_is_spent() -> None:
    assert _choose("timeout", Severity.low, 0, RETRY_PLAN)[1:] == (
        RecoveryAction.retry_with_backoff,
        "plan:patient",
    )
    # maxRetries 1: one attempt spends them (the default budget would allow three).
    assert _choose("timeout", Severity.low, 1, RETRY_PLAN)[1:] == (
        RecoveryAction.failover_to_backup,
        "retries_spent",
    )


def test_resolve_plan() -> None:
    plans = {"cheap": CHEAP_PLAN, "patient": RETRY_PLAN}

    assert resolve_plan(None, None, plans).status is PlanStatus.none
    applied = resolve_plan("cheap", None, plans)
    assert (applied.status, applied.template) == (PlanStatus.applied, CHEAP_PLAN)
    unknown = resolve_plan("nonesuch", None, plans)
    assert (unknown.status, unknown.template, unknown.requested) == (
        PlanStatus.unknown,
        None,
        "nonesuch",
    )
    # Pinned: a later report naming another plan (or none) keeps the pinned one.
    kept = resolve_plan("patient", "cheap", plans)
    assert (kept.status, kept.template, kept.requested) == (
        PlanStatus.pinned_elsewhere,
        CHEAP_PLAN,
        "patient",
    )
    assert resolve_plan(None, "cheap", plans).template == CHEAP_PLAN
    # The catalog dropped the pinned plan meanwhile.
    assert resolve_plan(None, "gone", plans).status is PlanStatus.unknown


def test_a_plan_sets_its_timers() -> None:
    slow = RecoveryTemplate(
        "slow",
        Strategy.AVAILABILITY_FOCUSED,
        RecoveryAction.failover_to_backup,
        restore_stages=(0.25, 1.0),
        stage_hold_seconds=300,
        monitoring_seconds=600,
    )
    choice = choose_recovery("provider_outage", Severity.high, 0.0, "moderate", False, slow)

    plan = plan_recovery(choice, "svc", FAILED, SNAP, NOW, template=slow)
    default = plan_recovery(choice, "svc", FAILED, SNAP, NOW)

    assert (plan.restore_stages, plan.stage_hold_seconds, plan.monitoring_seconds) == (
        (0.25, 1.0),
        300,
        600,
    )
    assert plan.estimated_resolution_minutes == (600 + 2 * 300) / 60 == 20
    assert default.estimated_resolution_minutes == 5


# ---- estimatedResolutionTime ----


def test_the_estimate_is_the_median_of_past_resolutions() -> None:
    choice = choose_recovery("provider_outage", Severity.high, 0.0, "moderate")

    fresh = plan_recovery(choice, "svc", FAILED, SNAP, NOW)
    seen = plan_recovery(choice, "svc", FAILED, SNAP, NOW, history_minutes=[2.0, 11.0, 3.5])

    assert (fresh.estimated_resolution_minutes, fresh.resolution_basis) == (5, "plan_timers")
    assert (seen.estimated_resolution_minutes, seen.resolution_basis) == (3.5, "history")
    assert seen.resolution_samples == 3
