"""Activities of EmergencyOverrideWorkflow: the override's store writes through
store/emergencies.py, each applied once (a ledger row per step key), and their events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from routing.decide import UnknownService, decide
from routing.types import NoEligibleNode, RoutingDecision, RoutingRequest
from store.base import iso_z, utcnow
from store.coordinations import CoordinationKind, CoordinationRecord, record_coordination
from store.crypto import FieldCipher
from store.emergencies import (
    EmergencyAlreadyActive,
    EmergencyEnded,
    EmergencyNotFound,
    close_stale_emergency,
    emergency_spend,
    end_emergency,
    extend_emergency,
    open_emergency,
    select_emergency_node,
    service_exists,
)
from store.events import publish
from store.ledger import apply_once
from store.models import Emergency
from store.snapshot import load_snapshot
from switchyard.settings import Settings
from workflows.emergency_types import (
    ACTIVATE,
    DEACTIVATE,
    EXTEND,
    READ_SPEND,
    ActivateInput,
    Activation,
    DeactivateInput,
    Deactivation,
    EmergencySteps,
    EndReason,
    ExtendInput,
    ExtendResult,
    SelectedNodeInfo,
    SpendInput,
    SpendReading,
)


def calling_workflow_id() -> str:
    """The id of the workflow that scheduled the running activity."""
    workflow_id = activity.info().workflow_id
    if workflow_id is None:
        raise ApplicationError(
            "emergency activities run only inside a workflow", type="NoWorkflow", non_retryable=True
        )
    return workflow_id


def ledger_key(step_key: str) -> str:
    """The idempotency key of a workflow step: workflow id + the workflow's step key."""
    return f"{calling_workflow_id()}/{step_key}"


def applied_optimizations(decision: RoutingDecision, guarded: bool) -> list[str]:
    """What an activation applied, in the order a coordination's answer lists them:
    `intelligent_routing` (the routing engine chose the node), `backend_agent_coordination`
    (the activation is announced to the backend agents' event stream in its transaction),
    `cascade_protection` (the service is in an open incident's blast radius),
    `emergency_override` (the decision was made under the active emergency: its budget and
    emergency-only nodes), `recovery_override` (a running recovery's hold shaped it)."""
    applied = ["intelligent_routing", "backend_agent_coordination"]
    if guarded:
        applied.append("cascade_protection")
    if decision.emergency_applied:
        applied.append("emergency_override")
    if decision.recovery_override_applied:
        applied.append("recovery_override")
    return applied


def activation_of(
    data: ActivateInput, decision: RoutingDecision, guarded: bool = False
) -> Activation:
    """The serialisable record of what the activation decided."""
    node = decision.node
    return Activation(
        applied_optimizations=applied_optimizations(decision, guarded),
        coordination_id=data.coordination_id,
        selected_node=SelectedNodeInfo(
            node_id=node.node_id,
            provider_name=node.provider_name,
            region=node.region,
            success_rate=decision.estimated_success_rate,
            cost_per_request=node.cost_per_request,
            health_score=decision.health.health_score,
        ),
        routing_strategy=decision.strategy.value,
        strategy_reason=decision.strategy_reason,
        decision_reason=decision.reason,
        confidence_score=decision.confidence_score,
        estimated_cost=decision.estimated_cost,
        started_at=data.started_at,
        deadline=data.deadline,
    )


@contextmanager
def business_failures() -> Iterator[None]:
    """The store's refusals as non-retryable failures the workflow and the API understand."""
    try:
        yield
    except EmergencyNotFound as exc:
        raise ApplicationError(str(exc), type="EmergencyNotFound", non_retryable=True) from exc
    except EmergencyEnded as exc:
        raise ApplicationError(str(exc), type="EmergencyEnded", non_retryable=True) from exc
    except EmergencyAlreadyActive as exc:
        raise ApplicationError(
            str(exc),
            {
                "coordinationId": exc.coordination_id,
                "workflowId": exc.workflow_id,
                "deadline": iso_z(exc.deadline),
            },
            type="EmergencyAlreadyActive",
            non_retryable=True,
        ) from exc


class EmergencyActivities(EmergencySteps):
    """Store effects of emergency overrides; built once per worker with the session factory."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.cipher = FieldCipher.from_keys(settings.encryption_keys)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of this class, for the worker."""
        return [self.activate, self.extend, self.read_spend, self.deactivate]

    @activity.defn(name=ACTIVATE)
    def activate(self, data: ActivateInput) -> Activation:
        """Insert the active emergency, route with it in the snapshot, record and announce."""
        workflow_id = calling_workflow_id()

        def effect(session: Session) -> dict[str, Any]:
            if not service_exists(session=session, service=data.service):
                raise ApplicationError(
                    f"unknown service {data.service!r}", type="UnknownService", non_retryable=True
                )
            now = utcnow()
            stale = close_stale_emergency(
                session=session,
                service=data.service,
                coordination_id=data.coordination_id,
                end_reason=EndReason.expired.value,
                now=now,
            )
            if stale is not None:
                detail = "closed by the next emergency: its workflow had stopped"
                _announce_end(session, stale, detail=detail, ended_at=now)
            open_emergency(
                session=session,
                workflow_id=workflow_id,
                coordination_id=data.coordination_id,
                service=data.service,
                operation=data.operation,
                emergency_reason=data.emergency_reason,
                business_justification=data.business_justification,
                max_budget_override=data.max_budget_override,
                started_at=data.started_at,
                deadline=data.deadline,
                cipher=self.cipher,
            )
            decision, guarded = _route(session, data)
            select_emergency_node(
                session=session, coordination_id=data.coordination_id, node_id=decision.node.node_id
            )
            activation = activation_of(data, decision, guarded)
            record = CoordinationRecord.of_decision(
                decision,
                coordination_id=data.coordination_id,
                kind=CoordinationKind.emergency,
                service=data.service,
                operation=data.operation,
                response=activation.model_dump(mode="json", by_alias=True),
                created_at=data.started_at,
                emergency_workflow_id=workflow_id,
            )
            record_coordination(session=session, record=record)
            self._announce_activation(session, data, decision, workflow_id)
            return activation.model_dump(mode="json")

        with business_failures():
            stored = apply_once(self.sessions, ledger_key(data.step_key), effect)
        return Activation.model_validate(stored)

    @activity.defn(name=EXTEND)
    def extend(self, data: ExtendInput) -> ExtendResult:
        """Move the active emergency's deadline in the store and announce it."""

        def effect(session: Session) -> dict[str, Any]:
            row = extend_emergency(
                session=session, coordination_id=data.coordination_id, deadline=data.deadline
            )
            publish(
                session,
                "emergency_mode_extended",
                {
                    "coordinationId": data.coordination_id,
                    "serviceName": row.service,
                    "previousDeadline": iso_z(data.previous_deadline),
                    "deadline": iso_z(data.deadline),
                    "addedMinutes": data.minutes,
                    "durationMinutes": data.total_minutes,
                    "reason": data.reason,
                    "requestedBy": data.requested_by,
                },
                service=row.service,
                coordination_id=data.coordination_id,
                workflow_id=row.workflow_id,
            )
            return ExtendResult(
                coordination_id=data.coordination_id,
                previous_deadline=data.previous_deadline,
                deadline=data.deadline,
                total_minutes=data.total_minutes,
                extensions=data.extensions,
            ).model_dump(mode="json")

        with business_failures():
            stored = apply_once(self.sessions, ledger_key(data.step_key), effect)
        return ExtendResult.model_validate(stored)

    @activity.defn(name=READ_SPEND)
    def read_spend(self, data: SpendInput) -> SpendReading:
        """Spend charged to the override so far and the cheapest request of the service."""
        # A read: naturally idempotent, so no ledger row per poll.
        with business_failures(), self.sessions() as session:
            spend = emergency_spend(session=session, coordination_id=data.coordination_id)
        return SpendReading(
            spent=spend.spent,
            max_budget_override=spend.max_budget_override,
            cheapest_cost=spend.cheapest_cost,
        )

    @activity.defn(name=DEACTIVATE)
    def deactivate(self, data: DeactivateInput) -> Deactivation:
        """End the emergency in the store (routing is back to normal on commit) and announce."""

        def effect(session: Session) -> dict[str, Any]:
            row, ended_now = end_emergency(
                session=session,
                coordination_id=data.coordination_id,
                end_reason=data.end_reason.value,
                ended_at=data.ended_at,
            )
            if ended_now:
                _announce_end(
                    session,
                    row,
                    detail=data.detail,
                    ended_at=data.ended_at,
                    requested_by=data.requested_by,
                )
            return Deactivation(
                spent=row.spent,
                ended_at=row.ended_at or data.ended_at,
                end_reason=EndReason(row.end_reason or data.end_reason),
            ).model_dump(mode="json")

        with business_failures():
            stored = apply_once(self.sessions, ledger_key(data.step_key), effect)
        return Deactivation.model_validate(stored)

    def _announce_activation(
        self, session: Session, data: ActivateInput, decision: RoutingDecision, workflow_id: str
    ) -> None:
        publish(
            session,
            "emergency_mode_activated",
            # The outbox is at rest too: reason and justification are stored encrypted.
            self.cipher.seal_event(
                "emergency_mode_activated",
                data.coordination_id,
                {
                    "coordinationId": data.coordination_id,
                    "serviceName": data.service,
                    "emergencyReason": data.emergency_reason,
                    "maxBudgetOverride": data.max_budget_override,
                    "selectedProvider": decision.node.provider_name,
                    "businessJustification": data.business_justification,
                    "workflowId": workflow_id,
                    "durationMinutes": data.duration_minutes,
                    "deadline": iso_z(data.deadline),
                    "requestedBy": data.requested_by,
                },
            ),
            service=data.service,
            coordination_id=data.coordination_id,
            workflow_id=workflow_id,
        )


def _route(session: Session, data: ActivateInput) -> tuple[RoutingDecision, bool]:
    """The activation's decision: routing with the new emergency in the store's snapshot, as
    any execute-coordination would, emergency-only nodes included; and whether an open
    incident guards the service."""
    snapshot = load_snapshot(session, data.started_at)
    request = RoutingRequest(
        service=data.service,
        operation=data.operation,
        request_id=data.coordination_id,
        require_emergency_override=True,
    )
    try:
        return decide(request, snapshot, data.started_at), data.service in snapshot.incidents
    except UnknownService as exc:
        raise ApplicationError(str(exc), type="UnknownService", non_retryable=True) from exc
    except NoEligibleNode as exc:
        exclusions = [
            {"nodeId": e.node_id, "reason": e.reason.value, "detail": e.detail}
            for e in exc.exclusions
        ]
        raise ApplicationError(
            str(exc), {"excludedNodes": exclusions}, type="NoEligibleNode", non_retryable=True
        ) from exc


def _announce_end(
    session: Session,
    row: Emergency,
    *,
    detail: str,
    ended_at: datetime,
    requested_by: str | None = None,
) -> None:
    payload: dict[str, Any] = {
        "coordinationId": row.coordination_id,
        "serviceName": row.service,
        "endReason": row.end_reason,
        "detail": detail,
    }
    if requested_by is not None:
        payload["requestedBy"] = requested_by
    payload |= {
        "spent": row.spent,
        "maxBudgetOverride": row.max_budget_override,
        "startedAt": iso_z(row.started_at),
        "deadline": iso_z(row.deadline),
        "endedAt": iso_z(ended_at),
    }
    publish(
        session,
        "emergency_mode_ended",
        payload,
        service=row.service,
        coordination_id=row.coordination_id,
        workflow_id=row.workflow_id,
    )
