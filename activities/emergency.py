"""Activities of EmergencyOverrideWorkflow: the override's store writes, each applied once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from routing.decide import UnknownService, decide
from routing.types import NoEligibleNode, RoutingDecision, RoutingRequest
from store.base import utcnow
from store.coordinations import coordination_row
from store.crypto import FieldCipher
from store.events import publish, snapshot_changed
from store.ledger import apply_once
from store.models import Coordination, Emergency, ProviderNodeRow, ProviderService
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
    EndReason,
    ExtendInput,
    ExtendResult,
    SelectedNodeInfo,
    SpendInput,
    SpendReading,
)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


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


def activation_of(data: ActivateInput, decision: RoutingDecision) -> Activation:
    """The serialisable record of what the activation decided."""
    node = decision.node
    return Activation(
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


def _not_found(coordination_id: str) -> ApplicationError:
    return ApplicationError(
        f"no emergency {coordination_id!r} in the store",
        type="EmergencyNotFound",
        non_retryable=True,
    )


class EmergencyActivities:
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
            if session.get(ProviderService, data.service) is None:
                raise ApplicationError(
                    f"unknown service {data.service!r}", type="UnknownService", non_retryable=True
                )
            self._close_stale(session, data)
            row = Emergency(
                workflow_id=workflow_id,
                coordination_id=data.coordination_id,
                service=data.service,
                operation=data.operation,
                status="active",
                emergency_reason=self.cipher.seal(
                    Emergency.emergency_reason, data.coordination_id, data.emergency_reason
                ),
                business_justification=self.cipher.seal(
                    Emergency.business_justification,
                    data.coordination_id,
                    data.business_justification,
                ),
                max_budget_override=data.max_budget_override,
                spent=0.0,
                started_at=data.started_at,
                deadline=data.deadline,
            )
            session.add(row)
            session.flush()
            # The store's snapshot now holds the new emergency: routing decides with it like
            # any execute-coordination would, emergency-only nodes included.
            snapshot = load_snapshot(session, data.started_at)
            request = RoutingRequest(
                service=data.service,
                operation=data.operation,
                request_id=data.coordination_id,
                require_emergency_override=True,
            )
            try:
                decision = decide(request, snapshot, data.started_at)
            except UnknownService as exc:
                raise ApplicationError(str(exc), type="UnknownService", non_retryable=True) from exc
            except NoEligibleNode as exc:
                exclusions = [
                    {"nodeId": e.node_id, "reason": e.reason.value, "detail": e.detail}
                    for e in exc.exclusions
                ]
                raise ApplicationError(
                    str(exc),
                    {"excludedNodes": exclusions},
                    type="NoEligibleNode",
                    non_retryable=True,
                ) from exc
            row.selected_node_id = decision.node.node_id
            activation = activation_of(data, decision)
            session.add(_coordination_row(data, decision, activation, workflow_id))
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
                        "deadline": _iso(data.deadline),
                        "requestedBy": data.requested_by,
                    },
                ),
                service=data.service,
                coordination_id=data.coordination_id,
                workflow_id=workflow_id,
            )
            snapshot_changed(session)
            return activation.model_dump(mode="json")

        return Activation.model_validate(
            apply_once(self.sessions, ledger_key(data.step_key), effect)
        )

    @activity.defn(name=EXTEND)
    def extend(self, data: ExtendInput) -> ExtendResult:
        """Move the active emergency's deadline in the store and announce it."""

        def effect(session: Session) -> dict[str, Any]:
            row = session.get(Emergency, data.coordination_id)
            if row is None:
                raise _not_found(data.coordination_id)
            if row.status != "active":
                raise ApplicationError(
                    f"emergency {data.coordination_id!r} has ended ({row.end_reason})",
                    type="EmergencyEnded",
                    non_retryable=True,
                )
            row.deadline = data.deadline
            publish(
                session,
                "emergency_mode_extended",
                {
                    "coordinationId": data.coordination_id,
                    "serviceName": row.service,
                    "previousDeadline": _iso(data.previous_deadline),
                    "deadline": _iso(data.deadline),
                    "addedMinutes": data.minutes,
                    "durationMinutes": data.total_minutes,
                    "reason": data.reason,
                    "requestedBy": data.requested_by,
                },
                service=row.service,
                coordination_id=data.coordination_id,
                workflow_id=row.workflow_id,
            )
            snapshot_changed(session)
            return ExtendResult(
                coordination_id=data.coordination_id,
                previous_deadline=data.previous_deadline,
                deadline=data.deadline,
                total_minutes=data.total_minutes,
                extensions=data.extensions,
            ).model_dump(mode="json")

        return ExtendResult.model_validate(
            apply_once(self.sessions, ledger_key(data.step_key), effect)
        )

    @activity.defn(name=READ_SPEND)
    def read_spend(self, data: SpendInput) -> SpendReading:
        """Spend charged to the override so far and the cheapest request of the service."""
        # A read: naturally idempotent, so no ledger row per poll.
        with self.sessions() as session:
            row = session.get(Emergency, data.coordination_id)
            if row is None:
                raise _not_found(data.coordination_id)
            cheapest = session.scalar(
                select(func.min(ProviderNodeRow.cost_per_request)).where(
                    ProviderNodeRow.service == row.service, ProviderNodeRow.enabled.is_(True)
                )
            )
            return SpendReading(
                spent=row.spent,
                max_budget_override=row.max_budget_override,
                cheapest_cost=cheapest,
            )

    @activity.defn(name=DEACTIVATE)
    def deactivate(self, data: DeactivateInput) -> Deactivation:
        """End the emergency in the store (routing is back to normal on commit) and announce."""

        def effect(session: Session) -> dict[str, Any]:
            row = session.get(Emergency, data.coordination_id)
            if row is None:
                raise _not_found(data.coordination_id)
            if row.status == "active":
                row.status = "ended"
                row.ended_at = data.ended_at
                row.end_reason = data.end_reason.value
                publish(
                    session,
                    "emergency_mode_ended",
                    {
                        "coordinationId": row.coordination_id,
                        "serviceName": row.service,
                        "endReason": row.end_reason,
                        "detail": data.detail,
                        "requestedBy": data.requested_by,
                        "spent": row.spent,
                        "maxBudgetOverride": row.max_budget_override,
                        "startedAt": _iso(row.started_at),
                        "deadline": _iso(row.deadline),
                        "endedAt": _iso(data.ended_at),
                    },
                    service=row.service,
                    coordination_id=row.coordination_id,
                    workflow_id=row.workflow_id,
                )
                snapshot_changed(session)
            return Deactivation(
                spent=row.spent,
                ended_at=row.ended_at or data.ended_at,
                end_reason=EndReason(row.end_reason or data.end_reason),
            ).model_dump(mode="json")

        return Deactivation.model_validate(
            apply_once(self.sessions, ledger_key(data.step_key), effect)
        )

    def _close_stale(self, session: Session, data: ActivateInput) -> None:
        """Refuse a second active emergency; close one left behind by a terminated workflow."""
        other = session.scalars(
            select(Emergency).where(
                Emergency.service == data.service,
                Emergency.status == "active",
                Emergency.coordination_id != data.coordination_id,
            )
        ).first()
        if other is None:
            return
        now = utcnow()
        if other.deadline > now:
            raise ApplicationError(
                f"emergency {other.coordination_id!r} is already active for {data.service!r}",
                {
                    "coordinationId": other.coordination_id,
                    "workflowId": other.workflow_id,
                    "deadline": _iso(other.deadline),
                },
                type="EmergencyAlreadyActive",
                non_retryable=True,
            )
        other.status = "ended"
        other.ended_at = now
        other.end_reason = EndReason.expired.value
        publish(
            session,
            "emergency_mode_ended",
            {
                "coordinationId": other.coordination_id,
                "serviceName": other.service,
                "endReason": other.end_reason,
                "detail": "closed by the next emergency: its workflow had stopped",
                "spent": other.spent,
                "maxBudgetOverride": other.max_budget_override,
                "startedAt": _iso(other.started_at),
                "deadline": _iso(other.deadline),
                "endedAt": _iso(now),
            },
            service=other.service,
            coordination_id=other.coordination_id,
            workflow_id=other.workflow_id,
        )
        session.flush()


def _coordination_row(
    data: ActivateInput, decision: RoutingDecision, activation: Activation, workflow_id: str
) -> Coordination:
    return coordination_row(
        decision,
        coordination_id=data.coordination_id,
        kind="emergency",
        service=data.service,
        operation=data.operation,
        response=activation.model_dump(mode="json", by_alias=True),
        created_at=data.started_at,
        emergency_workflow_id=workflow_id,
    )
