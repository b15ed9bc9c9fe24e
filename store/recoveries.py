"""What recoveries write: error streams and their events, routing overrides, how a recovery
ended; and the live figures a recovery's health check reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from routing.recovery import RecoveryTemplate
from routing.types import BreakerState
from store.catalog import RecoveryPlanSpec
from store.coordinations import touch_monitoring_session
from store.crypto import FieldCipher
from store.events import snapshot_changed
from store.models import (
    ErrorEvent,
    ErrorStream,
    MonitoringSession,
    NodeHealthRow,
    ProviderNodeRow,
    ProviderService,
    RecoveryRun,
    RoutingOverrideRow,
)
from store.upsert import insert_ignore

# Stream statuses while its recovery runs (the recovery's phase names them).
RUNNING_STREAM_STATUSES = ("recovering", "escalated")
# Resolved runs a resolution estimate looks back on (the most recent).
HISTORY_RUNS = 50


@dataclass(frozen=True, slots=True)
class ReportedError:
    """One error report of a stream, as the store records it."""

    key: str  # idempotency key of the report within its recovery
    workflow_id: str
    service: str
    stream_id: str
    error_type: str
    severity: str
    operation: str
    error_message: str
    failed_providers: list[str]
    cascading_services: list[str]
    revenue_at_risk: float
    recovery_strategy_id: str | None = None
    monitoring_session_id: str | None = None


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """A node's live figures next to its SLOs."""

    node_id: str
    health_score: float
    success_rate: float
    latency_p95_ms: float
    breaker_state: BreakerState
    latency_slo_ms: float
    error_rate_slo: float


def register_error(
    *, session: Session, error: ReportedError, now: datetime, cipher: FieldCipher
) -> None:
    """Create or touch the stream, touch its monitoring session, add the error event (its
    message encrypted)."""
    insert_ignore(
        session,
        ErrorStream,
        {
            "stream_id": error.stream_id,
            "service": error.service,
            "status": "recovering",
            "error_count": 0,
            "sync_count": 0,
            "first_seen": now,
            "last_seen": now,
            "cascading_services": [],
            "workflow_id": error.workflow_id,
        },
    )
    stream = session.get(ErrorStream, error.stream_id, with_for_update=True)
    assert stream is not None
    stream.status = "recovering"
    stream.workflow_id = error.workflow_id
    stream.error_count += 1
    stream.last_seen = now
    stream.cascading_services = sorted(
        set(stream.cascading_services) | set(error.cascading_services)
    )
    stream.recovery_strategy_id = error.recovery_strategy_id or stream.recovery_strategy_id
    if error.monitoring_session_id:
        stream.monitoring_session_id = error.monitoring_session_id
        touch_monitoring_session(
            session=session,
            session_id=error.monitoring_session_id,
            service=error.service,
            stream_id=error.stream_id,
            now=now,
        )
    session.add(
        ErrorEvent(
            idempotency_key=error.key,
            stream_id=error.stream_id,
            error_type=error.error_type,
            severity=error.severity,
            operation=error.operation,
            error_message=cipher.seal(ErrorEvent.error_message, error.key, error.error_message),
            failed_providers=error.failed_providers,
            revenue_at_risk=error.revenue_at_risk,
            created_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class EndedRun:
    """How a recovery run ended, for its recovery_runs row."""

    run_key: str
    strategy: str
    started_at: datetime
    ended_at: datetime
    declared_minutes: float | None = None
    recovery_plan_id: str | None = None


def recovery_templates(*, session: Session, service: str) -> dict[str, RecoveryTemplate]:
    """The service's recovery plans of the live catalog, by id."""
    row = session.get(ProviderService, service)
    plans = row.recovery_plans if row is not None else {}
    return {
        plan_id: RecoveryPlanSpec.model_validate(spec).template(plan_id)
        for plan_id, spec in (plans or {}).items()
    }


def resolution_history(*, session: Session, service: str, strategy: str) -> list[float]:
    """Minutes the service's most recent resolved recoveries under ``strategy`` took."""
    return list(
        session.scalars(
            select(RecoveryRun.minutes)
            .where(
                RecoveryRun.service == service,
                RecoveryRun.strategy == strategy,
                RecoveryRun.outcome == "resolved",
            )
            .order_by(RecoveryRun.ended_at.desc())
            .limit(HISTORY_RUNS)
        )
    )


def put_override(
    *,
    session: Session,
    workflow_id: str,
    service: str,
    excluded_nodes: list[str],
    strategy: str,
    restore_fraction: float,
    now: datetime,
    standby: str | None = None,
) -> int:
    """Create or move the recovery's routing override; its new revision. Snapshots reload.

    `standby` is the redundancy plan's standby (first retry target, hedge node)."""
    row = session.get(RoutingOverrideRow, workflow_id, with_for_update=True)
    if row is None:
        row = RoutingOverrideRow(
            workflow_id=workflow_id, service=service, created_at=now, revision=0
        )
        session.add(row)
    row.excluded_nodes = list(excluded_nodes)
    row.strategy = strategy
    row.restore_fraction = restore_fraction
    row.standby_node = standby
    row.revision = (row.revision or 0) + 1
    row.updated_at = now
    snapshot_changed(session)
    return row.revision


def set_stream_status(*, session: Session, stream_id: str, status: str) -> None:
    """Move the stream's status."""
    session.execute(
        update(ErrorStream).where(ErrorStream.stream_id == stream_id).values(status=status)
    )


def end_recovery(
    *,
    session: Session,
    workflow_id: str,
    stream_id: str,
    outcome: str,
    hold_open_nodes: list[str],
    now: datetime,
    run: EndedRun | None = None,
    service: str = "",
) -> None:
    """Remove the recovery's override and record its outcome on the stream (and, given
    ``run``, in recovery_runs).

    `hold_open_nodes` stay out of routing without the workflow: their breakers are forced
    open until an operator closes them. Snapshots reload.
    """
    session.execute(delete(RoutingOverrideRow).where(RoutingOverrideRow.workflow_id == workflow_id))
    if hold_open_nodes:
        session.execute(
            update(NodeHealthRow)
            .where(NodeHealthRow.node_id.in_(hold_open_nodes))
            .values(
                breaker_state=BreakerState.OPEN.value,
                breaker_forced=BreakerState.OPEN.value,
                breaker_changed_at=now,
                breaker_reason="recovery_unresolved",
                updated_at=now,
            )
        )
    session.execute(
        update(ErrorStream)
        .where(ErrorStream.stream_id == stream_id)
        .values(status=outcome, last_seen=now)
    )
    if run is not None:
        insert_ignore(
            session,
            RecoveryRun,
            {
                "run_key": run.run_key,
                "workflow_id": workflow_id,
                "service": service,
                "strategy": run.strategy,
                "outcome": outcome,
                "started_at": run.started_at,
                "ended_at": run.ended_at,
                "minutes": round(max(0.0, (run.ended_at - run.started_at).total_seconds()) / 60, 4),
                "declared_minutes": run.declared_minutes,
                "recovery_plan_id": run.recovery_plan_id,
            },
        )
    snapshot_changed(session)


def node_figures(*, session: Session, node_ids: list[str]) -> list[NodeFigures]:
    """Live figures and SLOs of the given nodes (those the store knows)."""
    rows = session.execute(
        select(ProviderNodeRow, NodeHealthRow)
        .join(NodeHealthRow, NodeHealthRow.node_id == ProviderNodeRow.node_id)
        .where(ProviderNodeRow.node_id.in_(node_ids))
    ).all()
    return [
        NodeFigures(
            node_id=node.node_id,
            health_score=health.health_score,
            success_rate=health.success_rate,
            latency_p95_ms=health.latency_p95_ms,
            breaker_state=BreakerState(health.breaker_state),
            latency_slo_ms=node.latency_slo_ms,
            error_rate_slo=node.error_rate_slo,
        )
        for node, health in rows
    ]


def running_recoveries(*, session: Session) -> list[ErrorStream]:
    """Streams whose recovery workflow is running."""
    return list(
        session.scalars(
            select(ErrorStream).where(
                ErrorStream.status.in_(RUNNING_STREAM_STATUSES),
                ErrorStream.workflow_id.is_not(None),
            )
        )
    )


def error_streams(*, session: Session) -> list[ErrorStream]:
    """Every error stream, most recently seen first."""
    return list(session.scalars(select(ErrorStream).order_by(ErrorStream.last_seen.desc())))


def monitoring_sessions_by_stream(*, session: Session) -> dict[str, list[str]]:
    """Stream id -> the monitoring sessions opened for it."""
    by_stream: dict[str, list[str]] = {}
    for monitor in session.scalars(
        select(MonitoringSession).where(MonitoringSession.stream_id.is_not(None))
    ):
        assert monitor.stream_id is not None
        by_stream.setdefault(monitor.stream_id, []).append(monitor.session_id)
    return by_stream
