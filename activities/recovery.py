"""Activities of ErrorRecoveryWorkflow: every store write it makes, each applied exactly once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from routing.recovery import RecoveryPlan, Severity, choose_recovery, plan_recovery
from routing.types import BreakerState, NoEligibleNode, ProviderNode, RoutingSnapshot
from store.base import utcnow
from store.coordinations import touch_monitoring_session
from store.crypto import FieldCipher
from store.events import publish, snapshot_changed
from store.ledger import apply_once
from store.models import (
    Coordination,
    ErrorEvent,
    ErrorStream,
    NodeHealthRow,
    ProviderNodeRow,
    RoutingOverrideRow,
)
from store.snapshot import load_snapshot
from store.upsert import insert_ignore
from switchyard.settings import Settings
from workflows.recovery_types import (
    ApplyOverrideInput,
    FinishInput,
    HandleErrorInput,
    HandleErrorResult,
    HealthCheckInput,
    HealthCheckResult,
    NodeCheck,
    NodeSummary,
    RecoveryEventInput,
    RecoveryPhase,
    RoutePlan,
)

# A node counts as recovered when its live figures are back within these bounds.
HEALTHY_MIN_SCORE = 70.0


def node_summary(node: ProviderNode, snapshot: RoutingSnapshot) -> NodeSummary:
    """Caller-facing figures of a node, live where known."""
    live = snapshot.health.get(node.node_id)
    return NodeSummary(
        node_id=node.node_id,
        provider_name=node.provider_name,
        region=node.region,
        success_rate=live.success_rate if live else node.success_rate,
        cost_per_request=node.cost_per_request,
        health_score=live.health_score if live else node.health_score,
        latency_ms=live.latency_ms if live else node.latency_ms,
    )


def route_plan(plan: RecoveryPlan, snapshot: RoutingSnapshot) -> RoutePlan:
    """The workflow's serialisable copy of a routing RecoveryPlan."""
    return RoutePlan(
        strategy=plan.strategy.value,
        action=plan.action.value,
        rule=plan.rule,
        selected=node_summary(plan.selected, snapshot),
        standby=node_summary(plan.standby, snapshot) if plan.standby else None,
        excluded_nodes=sorted(plan.excluded_nodes),
        estimated_cost=plan.estimated_cost,
        estimated_latency=plan.estimated_latency,
        restore_stages=list(plan.restore_stages),
        stage_hold_seconds=plan.stage_hold_seconds,
        monitoring_seconds=plan.monitoring_seconds,
        estimated_resolution_minutes=plan.estimated_resolution_minutes,
    )


class RecoveryActivities:
    """Store effects of recoveries; built once per worker with the session factory."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.cipher = FieldCipher.from_keys(settings.encryption_keys)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of this class, for the worker."""
        return [
            self.handle_error,
            self.apply_override,
            self.check_health,
            self.publish_recovery_event,
            self.finish_recovery,
        ]

    @activity.defn(name="recovery.handle_error")
    def handle_error(self, data: HandleErrorInput) -> HandleErrorResult:
        """Record the error, choose the route with routing/ and apply the override, atomically.

        One transaction (and one ledger row): the error event, the coordination and the
        override are all there or none is. Run as a local activity, so the error-to-failover
        path costs no task-queue round trips.
        """

        def effect(session: Session) -> dict[str, Any]:
            now = utcnow()
            _register_error(session, data, now, self.cipher)
            snapshot = load_snapshot(session, now, service=data.service)
            choice = choose_recovery(
                data.report.error_type,
                Severity(data.severity),
                data.report.revenue_at_risk,
                data.report.customer_impact,
            )
            try:
                plan = plan_recovery(
                    choice, data.service, frozenset(data.failed_providers), snapshot, now
                )
            except NoEligibleNode as exc:
                reasons = [
                    {"nodeId": e.node_id, "reason": e.reason.value, "detail": e.detail}
                    for e in exc.exclusions
                ]
                publish(
                    session,
                    "recovery_no_route",
                    {
                        "workflowId": data.workflow_id,
                        "serviceName": data.service,
                        "errorStreamId": data.stream_id,
                        "excludedNodes": reasons,
                    },
                    service=data.service,
                    workflow_id=data.workflow_id,
                    at=now,
                )
                return HandleErrorResult(no_route=str(exc), exclusions=reasons).model_dump()
            route = route_plan(plan, snapshot)
            _apply_override(
                session,
                ApplyOverrideInput(
                    key=data.key,
                    workflow_id=data.workflow_id,
                    service=data.service,
                    stream_id=data.stream_id,
                    plan=route,
                    coordination_id=data.coordination_id,
                    operation=data.report.operation,
                ),
                now,
            )
            return HandleErrorResult(plan=route, coordination_id=data.coordination_id).model_dump(
                mode="json"
            )

        return HandleErrorResult.model_validate(apply_once(self.sessions, data.key, effect))

    @activity.defn(name="recovery.apply_override")
    def apply_override(self, data: ApplyOverrideInput) -> dict[str, Any]:
        """Move the workflow's override (restore stages); the API reloads on commit."""
        return apply_once(
            self.sessions, data.key, lambda session: _apply_override(session, data, utcnow())
        )

    @activity.defn(name="recovery.check_health")
    def check_health(self, data: HealthCheckInput) -> HealthCheckResult:
        """Whether each node is back within its SLOs (breaker not open, score and rate ok)."""
        with self.sessions() as session:
            rows = session.execute(
                select(ProviderNodeRow, NodeHealthRow)
                .join(NodeHealthRow, NodeHealthRow.node_id == ProviderNodeRow.node_id)
                .where(ProviderNodeRow.node_id.in_(data.node_ids))
            ).all()
        checks = []
        for node, health in rows:
            problems = []
            if health.breaker_state == BreakerState.OPEN.value:
                problems.append("breaker open")
            if health.health_score < HEALTHY_MIN_SCORE:
                problems.append(f"health {health.health_score:g} < {HEALTHY_MIN_SCORE:g}")
            if health.success_rate < 100.0 - node.error_rate_slo:
                problems.append(f"success {health.success_rate:g}% below SLO")
            if health.latency_p95_ms > node.latency_slo_ms:
                problems.append(f"p95 {health.latency_p95_ms:g} ms above SLO")
            checks.append(
                NodeCheck(
                    node_id=node.node_id,
                    healthy=not problems,
                    health_score=health.health_score,
                    success_rate=health.success_rate,
                    breaker_state=health.breaker_state,
                    detail="; ".join(problems) or "healthy",
                )
            )
        return HealthCheckResult(nodes=checks)

    @activity.defn(name="recovery.publish_event")
    def publish_recovery_event(self, data: RecoveryEventInput) -> dict[str, Any]:
        """Publish a recovery event and move the stream's status, once."""

        def effect(session: Session) -> dict[str, Any]:
            now = utcnow()
            if data.stream_status:
                session.execute(
                    update(ErrorStream)
                    .where(ErrorStream.stream_id == data.stream_id)
                    .values(status=data.stream_status)
                )
            publish(
                session,
                data.event_type,
                {
                    "workflowId": data.workflow_id,
                    "serviceName": data.service,
                    "errorStreamId": data.stream_id,
                    **data.payload,
                },
                service=data.service,
                workflow_id=data.workflow_id,
                at=now,
            )
            # The event's id is drawn at commit (store/events.py), after this result.
            return {"eventType": data.event_type}

        return apply_once(self.sessions, data.key, effect)

    @activity.defn(name="recovery.finish")
    def finish_recovery(self, data: FinishInput) -> dict[str, Any]:
        """Remove the override, record the outcome; an unresolved end holds failed nodes open."""

        def effect(session: Session) -> dict[str, Any]:
            now = utcnow()
            session.execute(
                delete(RoutingOverrideRow).where(RoutingOverrideRow.workflow_id == data.workflow_id)
            )
            if data.hold_open_nodes:
                # Routing stays safe without the workflow: the nodes stay out until an
                # operator closes their breakers.
                session.execute(
                    update(NodeHealthRow)
                    .where(NodeHealthRow.node_id.in_(data.hold_open_nodes))
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
                .where(ErrorStream.stream_id == data.stream_id)
                .values(status=data.outcome.value, last_seen=now)
            )
            event_type = {
                RecoveryPhase.resolved: "recovery_resolved",
                RecoveryPhase.cancelled: "recovery_cancelled",
            }.get(data.outcome, "recovery_unresolved")
            publish(
                session,
                event_type,
                {
                    "workflowId": data.workflow_id,
                    "serviceName": data.service,
                    "errorStreamId": data.stream_id,
                    "outcome": data.outcome.value,
                    "reason": data.reason,
                    "heldOpen": data.hold_open_nodes,
                },
                service=data.service,
                workflow_id=data.workflow_id,
                at=now,
            )
            snapshot_changed(session)
            return {"outcome": data.outcome.value}

        return apply_once(self.sessions, data.key, effect)


def _register_error(
    session: Session, data: HandleErrorInput, now: datetime, cipher: FieldCipher
) -> None:
    """Create or touch the stream and add this error event (its message encrypted)."""
    report = data.report
    insert_ignore(
        session,
        ErrorStream,
        {
            "stream_id": data.stream_id,
            "service": data.service,
            "status": "recovering",
            "error_count": 0,
            "sync_count": 0,
            "first_seen": now,
            "last_seen": now,
            "cascading_services": [],
            "workflow_id": data.workflow_id,
        },
    )
    stream = session.get(ErrorStream, data.stream_id, with_for_update=True)
    assert stream is not None
    stream.status = "recovering"
    stream.workflow_id = data.workflow_id
    stream.error_count += 1
    stream.last_seen = now
    stream.cascading_services = sorted(
        set(stream.cascading_services) | set(report.cascading_services)
    )
    stream.recovery_strategy_id = report.recovery_strategy_id or stream.recovery_strategy_id
    if report.monitoring_session_id:
        stream.monitoring_session_id = report.monitoring_session_id
        touch_monitoring_session(
            session,
            session_id=report.monitoring_session_id,
            service=data.service,
            stream_id=data.stream_id,
            now=now,
        )
    session.add(
        ErrorEvent(
            idempotency_key=data.key,
            stream_id=data.stream_id,
            error_type=report.error_type,
            severity=report.severity,
            operation=report.operation,
            error_message=cipher.seal(ErrorEvent.error_message, data.key, report.error_message),
            failed_providers=report.failed_providers,
            revenue_at_risk=report.revenue_at_risk,
            created_at=now,
        )
    )
    if data.error_number == 1:
        publish(
            session,
            "recovery_started",
            {
                "workflowId": data.workflow_id,
                "serviceName": data.service,
                "errorStreamId": data.stream_id,
                "errorType": report.error_type,
                "severity": report.severity,
                "failedProviders": report.failed_providers,
                "cascadingServices": report.cascading_services,
            },
            service=data.service,
            workflow_id=data.workflow_id,
            at=now,
        )


def _apply_override(session: Session, data: ApplyOverrideInput, now: datetime) -> dict[str, Any]:
    """Upsert the workflow's override row, record the coordination if any, publish the event."""
    plan = data.plan
    row = session.get(RoutingOverrideRow, data.workflow_id, with_for_update=True)
    if row is None:
        row = RoutingOverrideRow(
            workflow_id=data.workflow_id, service=data.service, created_at=now, revision=0
        )
        session.add(row)
    row.excluded_nodes = list(plan.excluded_nodes)
    row.strategy = plan.strategy
    row.restore_fraction = data.restore_fraction
    row.revision = (row.revision or 0) + 1
    row.updated_at = now
    if data.coordination_id:
        session.add(
            Coordination(
                coordination_id=data.coordination_id,
                kind="backend_error",
                service=data.service,
                operation=data.operation,
                node_id=plan.selected.node_id,
                strategy=plan.strategy,
                strategy_reason=plan.rule,
                estimated_cost=plan.estimated_cost,
                estimated_latency=plan.estimated_latency,
                estimated_success_rate=plan.selected.success_rate,
                confidence_score=plan.selected.health_score,
                backend_integrated=True,
                error_stream_id=data.stream_id,
                response={"plan": plan.model_dump(mode="json")},
                created_at=now,
            )
        )
    publish(
        session,
        data.event,
        {
            "workflowId": data.workflow_id,
            "serviceName": data.service,
            "errorStreamId": data.stream_id,
            "coordinationId": data.coordination_id,
            "selectedProvider": plan.selected.provider_name,
            "selectedNode": plan.selected.node_id,
            "strategy": plan.strategy,
            "action": plan.action,
            "excludedNodes": plan.excluded_nodes,
            "restoreFraction": data.restore_fraction,
        },
        service=data.service,
        workflow_id=data.workflow_id,
        coordination_id=data.coordination_id,
        at=now,
    )
    snapshot_changed(session)
    return {"revision": row.revision}
