"""RecoveryActivities on the test store: what retryAttempts, recoveryStrategyId and the
service's past recoveries change in the plan a report gets, and the run a recovery records
when it ends."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from activities.recovery import RecoveryActivities
from routing.recovery import Severity
from store.base import utcnow
from store.db import transaction
from store.models import ErrorStream, RecoveryRun
from switchyard.settings import Settings
from workflows.recovery_types import (
    ErrorReport,
    FinishInput,
    HandleErrorInput,
    RecoveryPhase,
    RoutePlan,
)

SEED_PLAN = "samsara_failover_strategy"


def _handle(
    activities: RecoveryActivities,
    *,
    service: str = "samsara",
    error_type: str = "performance_degradation",
    severity: Severity = Severity.high,
    failed: tuple[str, ...] = ("samsara_primary",),
    retry_attempts: int = 0,
    plan_id: str | None = None,
    pinned: str | None = None,
) -> RoutePlan:
    workflow_id = f"recovery:{service}:s_{uuid.uuid4().hex[:8]}"
    report = ErrorReport(
        error_type=error_type,
        severity=severity,
        failed_providers=list(failed),
        retry_attempts=retry_attempts,
        revenue_at_risk=2000.0,
        customer_impact="moderate",
        recovery_strategy_id=plan_id,
    )
    result = activities.handle_error(
        HandleErrorInput(
            key=f"{workflow_id}/run/error/1",
            workflow_id=workflow_id,
            service=service,
            stream_id=workflow_id.rsplit(":", 1)[1],
            report=report,
            error_number=1,
            failed_providers=list(failed),
            severity=severity,
            coordination_id=f"backend_error_coordination_{uuid.uuid4().hex[:6]}",
            pinned_plan_id=pinned,
        )
    )
    assert result.plan is not None, result.no_route
    return result.plan


def _activities(sessions: sessionmaker[Session], settings: Settings) -> RecoveryActivities:
    return RecoveryActivities(sessions, settings)


def test_the_seed_plan_is_applied_from_the_catalog(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    plan = _handle(_activities(sessions, settings), plan_id=SEED_PLAN, retry_attempts=2)

    assert (plan.recovery_plan_id, plan.requested_plan_id, plan.plan_status) == (
        SEED_PLAN,
        SEED_PLAN,
        "applied",
    )
    assert plan.rule == f"plan:{SEED_PLAN}"
    assert (plan.strategy, plan.action) == (
        "AVAILABILITY_FOCUSED",
        "enable_multi_provider_redundancy",
    )
    assert (plan.estimated_resolution_minutes, plan.resolution_basis) == (5, "plan_timers")
    assert plan.handled_severity == "high"  # 2 attempts of 3: not spent


def test_a_plan_id_the_catalog_does_not_know_is_recorded_and_answered(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    plan = _handle(_activities(sessions, settings), plan_id="nonesuch_plan")

    assert (plan.recovery_plan_id, plan.requested_plan_id, plan.plan_status) == (
        None,
        "nonesuch_plan",
        "unknown",
    )
    assert plan.rule == "major_incident"  # the table chose
    with sessions() as session:
        streams = session.scalars(select(ErrorStream.recovery_strategy_id)).all()
    assert streams == ["nonesuch_plan"]


def test_a_pinned_plan_outlasts_a_report_naming_another(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    plan = _handle(_activities(sessions, settings), plan_id="other_plan", pinned=SEED_PLAN)

    assert (plan.recovery_plan_id, plan.requested_plan_id, plan.plan_status) == (
        SEED_PLAN,
        "other_plan",
        "pinned_elsewhere",
    )


def test_spent_retries_raise_the_severity_and_change_the_plan(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    activities = _activities(sessions, settings)
    fresh = _handle(activities, error_type="timeout", severity=Severity.low, retry_attempts=0)
    spent = _handle(activities, error_type="timeout", severity=Severity.low, retry_attempts=3)

    assert (fresh.handled_severity, fresh.action) == ("low", "retry_with_backoff")
    assert (spent.handled_severity, spent.action) == ("medium", "failover_to_backup")
    assert spent.selected.node_id != "samsara_primary"


def test_the_estimate_follows_the_services_resolved_recoveries(
    clean_store: Engine, sessions: sessionmaker[Session], settings: Settings
) -> None:
    activities = _activities(sessions, settings)
    started = utcnow() - timedelta(hours=1)
    for number, minutes in enumerate([2.0, 3.0, 12.0]):
        workflow_id = f"recovery:samsara:past_{number}"
        with transaction(sessions) as session:
            session.add(ErrorStream(stream_id=f"past_{number}", service="samsara"))
        activities.finish_recovery(
            FinishInput(
                key=f"{workflow_id}/run/finish/1",
                workflow_id=workflow_id,
                service="samsara",
                stream_id=f"past_{number}",
                outcome=RecoveryPhase.resolved,
                run_key=f"{workflow_id}/run",
                strategy="AVAILABILITY_FOCUSED",
                started_at=utcnow() - timedelta(minutes=minutes),
                declared_minutes=15.0,
            )
        )
    # Neither an unresolved run nor another strategy's counts.
    with transaction(sessions) as session:
        for key, strategy, outcome in [
            ("x/1", "AVAILABILITY_FOCUSED", "unresolved"),
            ("x/2", "COST_OPTIMIZED", "resolved"),
        ]:
            session.add(
                RecoveryRun(
                    run_key=key,
                    workflow_id=key,
                    service="samsara",
                    strategy=strategy,
                    outcome=outcome,
                    started_at=started,
                    ended_at=started + timedelta(minutes=90),
                    minutes=90.0,
                )
            )

    plan = _handle(activities, plan_id=SEED_PLAN)

    assert plan.resolution_basis == "history"
    assert plan.resolution_samples == 3
    assert 2.9 <= plan.estimated_resolution_minutes <= 3.1  # the median, 3 minutes
    with sessions() as session:
        runs = session.scalars(select(RecoveryRun).where(RecoveryRun.declared_minutes == 15.0))
        assert sorted(round(r.minutes) for r in runs) == [2, 3, 12]
