"""Activities of ErrorRecoveryWorkflow: store writes through store/recoveries.py, each applied
exactly once (a ledger row per step key), and the events that announce them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from routing.recovery import (
    DEFAULT_RETRY_BUDGET,
    PlanResolution,
    PlanStatus,
    RecoveryPlan,
    choose_recovery,
    handled_severity,
    plan_recovery,
    recovery_problems,
    resolve_plan,
    retries_spent,
)
from routing.types import NoEligibleNode, ProviderNode, RoutingSnapshot
from store.base import utcnow
from store.coordinations import CoordinationKind, CoordinationRecord, record_coordination
from store.crypto import FieldCipher
from store.events import publish
from store.ledger import apply_once
from store.recoveries import (
    EndedRun,
    ReportedError,
    end_recovery,
    node_figures,
    put_override,
    recovery_templates,
    register_error,
    resolution_history,
    set_stream_status,
)
from store.snapshot import load_snapshot
from switchyard.settings import Settings
from workflows.recovery_types import (
    APPLY_OVERRIDE,
    CHECK_HEALTH,
    FINISH,
    HANDLE_ERROR,
    PUBLISH_EVENT,
    ApplyOverrideInput,
    EventPublished,
    FinishInput,
    HandleErrorInput,
    HandleErrorResult,
    HealthCheckInput,
    HealthCheckResult,
    NodeCheck,
    NodeSummary,
    OverrideApplied,
    RecoveryEventInput,
    RecoveryFinished,
    RecoveryPhase,
    RecoverySteps,
    RoutePlan,
)

ENDING_EVENTS = {
    RecoveryPhase.resolved: "recovery_resolved",
    RecoveryPhase.cancelled: "recovery_cancelled",
}


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


def route_plan(
    plan: RecoveryPlan,
    snapshot: RoutingSnapshot,
    resolution: PlanResolution | None = None,
    handled_severity: str | None = None,
) -> RoutePlan:
    """The workflow's serialisable copy of a routing RecoveryPlan."""
    template = resolution.template if resolution is not None else None
    return RoutePlan(
        resolution_basis=plan.resolution_basis,
        resolution_samples=plan.resolution_samples,
        recovery_plan_id=template.plan_id if template is not None else None,
        requested_plan_id=resolution.requested if resolution is not None else None,
        plan_status=resolution.status.value if resolution is not None else "none",
        handled_severity=handled_severity,
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


def reported_error(data: HandleErrorInput) -> ReportedError:
    """The store's record of the reported error."""
    report = data.report
    return ReportedError(
        key=data.key,
        workflow_id=data.workflow_id,
        service=data.service,
        stream_id=data.stream_id,
        error_type=report.error_type,
        severity=report.severity.value,
        operation=report.operation,
        error_message=report.error_message,
        failed_providers=report.failed_providers,
        cascading_services=report.cascading_services,
        revenue_at_risk=report.revenue_at_risk,
        recovery_strategy_id=report.recovery_strategy_id,
        monitoring_session_id=report.monitoring_session_id,
    )


def recovery_coordination(
    data: ApplyOverrideInput, coordination_id: str, now: datetime
) -> CoordinationRecord:
    """The coordination an error report's route is recorded as."""
    plan = data.plan
    return CoordinationRecord(
        coordination_id=coordination_id,
        kind=CoordinationKind.backend_error,
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


class RecoveryActivities(RecoverySteps):
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

    @activity.defn(name=HANDLE_ERROR)
    def handle_error(self, data: HandleErrorInput) -> HandleErrorResult:
        """Record the error, choose the route with routing/ and apply the override, atomically.

        One transaction (and one ledger row): the error event, the coordination and the
        override are all there or none is. Run as a local activity, so the error-to-failover
        path costs no task-queue round trips.
        """

        def effect(session: Session) -> dict[str, Any]:
            now = utcnow()
            register_error(session=session, error=reported_error(data), now=now, cipher=self.cipher)
            if data.error_number == 1:
                self._announce(session, data, "recovery_started", _started(data), at=now)
            snapshot = load_snapshot(session, now, service=data.service)
            report = data.report
            resolution = resolve_plan(
                report.recovery_strategy_id,
                data.pinned_plan_id,
                recovery_templates(session=session, service=data.service),
            )
            template = resolution.template
            budget = template.retry_budget if template is not None else DEFAULT_RETRY_BUDGET
            severity = handled_severity(
                data.severity, report.severity, report.retry_attempts, budget
            )
            choice = choose_recovery(
                report.error_type,
                severity,
                report.revenue_at_risk,
                report.customer_impact,
                retries_spent=retries_spent(report.retry_attempts, budget),
                template=template,
            )
            follows = choice.follows_plan
            if template is not None and not follows:  # a retry plan, with the retries spent
                spent = PlanStatus.retries_spent
                resolution = PlanResolution(template, spent, resolution.requested)
            history = resolution_history(
                session=session, service=data.service, strategy=choice.strategy.value
            )
            try:
                plan = plan_recovery(
                    choice,
                    data.service,
                    frozenset(data.failed_providers),
                    snapshot,
                    now,
                    template=template if follows else None,
                    history_minutes=history,
                    operation=report.operation,
                )
            except NoEligibleNode as exc:
                reasons = [
                    {"nodeId": e.node_id, "reason": e.reason.value, "detail": e.detail}
                    for e in exc.exclusions
                ]
                no_route = {"excludedNodes": reasons}
                self._announce(session, data, "recovery_no_route", no_route, at=now)
                return HandleErrorResult(no_route=str(exc), exclusions=reasons).model_dump()
            route = route_plan(plan, snapshot, resolution, severity.value)
            override = ApplyOverrideInput(
                key=data.key,
                workflow_id=data.workflow_id,
                service=data.service,
                stream_id=data.stream_id,
                plan=route,
                coordination_id=data.coordination_id,
                operation=report.operation,
            )
            self._apply(session, override, now)
            result = HandleErrorResult(plan=route, coordination_id=data.coordination_id)
            return result.model_dump(mode="json")

        return HandleErrorResult.model_validate(apply_once(self.sessions, data.key, effect))

    @activity.defn(name=APPLY_OVERRIDE)
    def apply_override(self, data: ApplyOverrideInput) -> OverrideApplied:
        """Move the workflow's override (restore stages); the API reloads on commit."""

        def effect(session: Session) -> dict[str, Any]:
            return self._apply(session, data, utcnow()).model_dump()

        return OverrideApplied.model_validate(apply_once(self.sessions, data.key, effect))

    @activity.defn(name=CHECK_HEALTH)
    def check_health(self, data: HealthCheckInput) -> HealthCheckResult:
        """Whether each node is back within its SLOs (routing.recovery.recovery_problems)."""
        with self.sessions() as session:
            figures = node_figures(session=session, node_ids=data.node_ids)
        checks = []
        for node in figures:
            problems = recovery_problems(
                breaker_state=node.breaker_state,
                health_score=node.health_score,
                success_rate=node.success_rate,
                latency_p95_ms=node.latency_p95_ms,
                latency_slo_ms=node.latency_slo_ms,
                error_rate_slo=node.error_rate_slo,
            )
            checks.append(
                NodeCheck(
                    node_id=node.node_id,
                    healthy=not problems,
                    health_score=node.health_score,
                    success_rate=node.success_rate,
                    breaker_state=node.breaker_state.value,
                    detail="; ".join(problems) or "healthy",
                )
            )
        return HealthCheckResult(nodes=checks)

    @activity.defn(name=PUBLISH_EVENT)
    def publish_recovery_event(self, data: RecoveryEventInput) -> EventPublished:
        """Publish a recovery event and move the stream's status, once."""

        def effect(session: Session) -> dict[str, Any]:
            if data.stream_status:
                set_stream_status(
                    session=session, stream_id=data.stream_id, status=data.stream_status
                )
            self._announce(session, data, data.event_type, data.payload)
            return EventPublished(event_type=data.event_type).model_dump()

        return EventPublished.model_validate(apply_once(self.sessions, data.key, effect))

    @activity.defn(name=FINISH)
    def finish_recovery(self, data: FinishInput) -> RecoveryFinished:
        """Remove the override, record the outcome; an unresolved end holds failed nodes open."""

        def effect(session: Session) -> dict[str, Any]:
            end_recovery(
                session=session,
                workflow_id=data.workflow_id,
                stream_id=data.stream_id,
                outcome=data.outcome.value,
                hold_open_nodes=data.hold_open_nodes,
                now=utcnow(),
                run=_ended_run(data),
                service=data.service,
            )
            payload = {
                "outcome": data.outcome.value,
                "reason": data.reason,
                "heldOpen": data.hold_open_nodes,
            }
            event_type = ENDING_EVENTS.get(data.outcome, "recovery_unresolved")
            self._announce(session, data, event_type, payload)
            return RecoveryFinished(outcome=data.outcome).model_dump(mode="json")

        return RecoveryFinished.model_validate(apply_once(self.sessions, data.key, effect))

    def _apply(self, session: Session, data: ApplyOverrideInput, now: datetime) -> OverrideApplied:
        """Put the override, record the coordination if any, announce the route."""
        plan = data.plan
        revision = put_override(
            session=session,
            workflow_id=data.workflow_id,
            service=data.service,
            excluded_nodes=plan.excluded_nodes,
            strategy=plan.strategy,
            restore_fraction=data.restore_fraction,
            now=now,
            standby=plan.standby.node_id if plan.standby is not None else None,
        )
        if data.coordination_id:
            record = recovery_coordination(data, data.coordination_id, now)
            record_coordination(session=session, record=record)
        payload = {
            "coordinationId": data.coordination_id,
            "selectedProvider": plan.selected.provider_name,
            "selectedNode": plan.selected.node_id,
            "strategy": plan.strategy,
            "action": plan.action,
            "excludedNodes": plan.excluded_nodes,
            "restoreFraction": data.restore_fraction,
        }
        self._announce(
            session, data, data.event, payload, coordination_id=data.coordination_id, at=now
        )
        return OverrideApplied(revision=revision)

    def _announce(
        self,
        session: Session,
        data: HandleErrorInput | ApplyOverrideInput | RecoveryEventInput | FinishInput,
        event_type: str,
        payload: dict[str, Any],
        *,
        coordination_id: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Publish a recovery event in the step's transaction."""
        publish(
            session,
            event_type,
            {
                "workflowId": data.workflow_id,
                "serviceName": data.service,
                "errorStreamId": data.stream_id,
                **payload,
            },
            service=data.service,
            workflow_id=data.workflow_id,
            coordination_id=coordination_id,
            at=at or utcnow(),
        )


def _started(data: HandleErrorInput) -> dict[str, Any]:
    report = data.report
    return {
        "errorType": report.error_type,
        "severity": report.severity.value,
        "failedProviders": report.failed_providers,
        "cascadingServices": report.cascading_services,
    }


def _ended_run(data: FinishInput) -> EndedRun | None:
    """The run's recovery_runs row; None for a run that applied no route (or was recorded
    before runs were kept)."""
    if data.run_key is None or data.strategy is None or data.started_at is None:
        return None
    return EndedRun(
        run_key=data.run_key,
        strategy=data.strategy,
        started_at=data.started_at,
        ended_at=data.ended_at or utcnow(),
        declared_minutes=data.declared_minutes,
        recovery_plan_id=data.recovery_plan_id,
    )
