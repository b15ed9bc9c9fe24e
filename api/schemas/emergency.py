"""Request and response models of the emergency-override endpoints (contract section 3)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from api.schemas.common import ResponseModel, WireModel
from api.schemas.coordination import Name
from routing.types import Strategy
from store.base import utcnow
from workflows.emergency_types import (
    MAX_TOTAL_MINUTES,
    Activation,
    EmergencyOverrideInput,
    EmergencyStatus,
)

# Free text an incident commander must give: trimmed, then 1..1000 characters.
Statement = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class EmergencyOverrideRequest(WireModel):
    """Body of POST emergency-override."""

    service_name: str = Name
    operation: str = Name
    emergency_reason: Statement
    max_budget_override: float = Field(gt=0, le=1e9)
    duration_minutes: int = Field(ge=1, le=MAX_TOTAL_MINUTES)
    business_justification: Statement


class ExtendEmergencyRequest(WireModel):
    """Body of POST emergency-override/{service}/extend."""

    minutes: int = Field(ge=1, le=MAX_TOTAL_MINUTES)
    reason: Statement


class CancelEmergencyRequest(WireModel):
    """Body of POST emergency-override/{service}/cancel."""

    reason: Statement


class EmergencyNode(ResponseModel):
    """The node the emergency routes to (built from any object with these attributes)."""

    node_id: str
    provider_name: str
    success_rate: float
    cost_per_request: float
    region: str
    health_score: float


class EmergencyRoutingDecision(ResponseModel):
    """The routing decision made with the emergency in effect."""

    selected_node: EmergencyNode
    routing_strategy: Strategy
    decision_reason: str = ""


class EmergencyMetadata(ResponseModel):
    """Confidence and how the coordination was carried out."""

    confidence_score: float
    coordination_strategy: str
    applied_optimizations: list[str]


class EmergencyCoordinationResult(ResponseModel):
    """data.coordinationResult of the activation."""

    coordination_id: str
    routing_decision: EmergencyRoutingDecision
    metadata: EmergencyMetadata


class EmergencyActivationStatus(ResponseModel):
    """data.emergencyStatus of the activation."""

    activated: bool
    coordination_id: str
    max_budget_override: float
    duration_minutes: int
    estimated_cost: float
    selected_provider: str
    deadline: datetime
    workflow_id: str


class EmergencyOverrideResult(ResponseModel):
    """The data block of POST emergency-override."""

    coordination_result: EmergencyCoordinationResult
    emergency_status: EmergencyActivationStatus

    @classmethod
    def of(
        cls, params: EmergencyOverrideInput, activation: Activation, workflow_id: str
    ) -> EmergencyOverrideResult:
        """The contract's answer for an activated emergency."""
        node = activation.selected_node
        return cls(
            coordination_result=EmergencyCoordinationResult(
                coordination_id=activation.coordination_id,
                routing_decision=EmergencyRoutingDecision(
                    selected_node=EmergencyNode.model_validate(node, from_attributes=True),
                    routing_strategy=Strategy(activation.routing_strategy),
                    decision_reason=activation.decision_reason,
                ),
                metadata=EmergencyMetadata(
                    confidence_score=activation.confidence_score,
                    coordination_strategy="emergency_coordination",
                    applied_optimizations=activation.applied_optimizations,
                ),
            ),
            emergency_status=EmergencyActivationStatus(
                activated=True,
                coordination_id=activation.coordination_id,
                max_budget_override=params.max_budget_override,
                duration_minutes=params.duration_minutes,
                estimated_cost=activation.estimated_cost,
                selected_provider=node.provider_name,
                deadline=activation.deadline,
                workflow_id=workflow_id,
            ),
        )


class EmergencyExtension(ResponseModel):
    """The deadline after an extension."""

    workflow_id: str
    coordination_id: str
    previous_deadline: datetime
    deadline: datetime
    duration_minutes: int
    extensions: int


class EmergencyView(ResponseModel):
    """An emergency's state: from its workflow while it runs, else from the store."""

    workflow_id: str
    service_name: str
    coordination_id: str
    phase: str
    running: bool
    source: Literal["workflow", "store"]
    started_at: datetime | None = None
    deadline: datetime | None = None
    remaining_seconds: float
    duration_minutes: int
    extensions: int | None = None
    max_budget_override: float
    spent_under_override: float
    selected_node: EmergencyNode | None = None
    end_reason: str | None = None
    end_detail: str | None = None
    ended_at: datetime | None = None

    @classmethod
    def of_status(cls, status: EmergencyStatus, *, running: bool) -> EmergencyView:
        """The view from the workflow's status (query or update result)."""
        # The query's remaining time is as of the workflow's last task; the clock is fresher.
        remaining = 0.0
        if status.deadline is not None and status.phase == "active":
            remaining = max(0.0, (status.deadline - utcnow()).total_seconds())
        node = status.selected_node
        return cls(
            workflow_id=status.workflow_id,
            service_name=status.service,
            coordination_id=status.coordination_id,
            phase=status.phase.value,
            running=running,
            source="workflow",
            started_at=status.started_at,
            deadline=status.deadline,
            remaining_seconds=round(remaining, 3),
            duration_minutes=status.duration_minutes,
            extensions=status.extensions,
            max_budget_override=status.max_budget_override,
            spent_under_override=status.spent,
            selected_node=EmergencyNode.model_validate(node, from_attributes=True)
            if node is not None
            else None,
            end_reason=status.end_reason.value if status.end_reason else None,
            end_detail=status.end_detail or None,
            ended_at=status.ended_at,
        )
