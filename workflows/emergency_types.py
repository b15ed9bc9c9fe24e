"""Inputs, outputs and state of EmergencyOverrideWorkflow, and the activities it calls.

New fields always get defaults so that recorded histories keep decoding.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio import activity

# Activity names as recorded in histories: renaming one breaks replay of running emergencies.
ACTIVATE = "emergency.activate"
EXTEND = "emergency.extend"
READ_SPEND = "emergency.read_spend"
DEACTIVATE = "emergency.deactivate"

MAX_TOTAL_MINUTES = 24 * 60
DEFAULT_POLL_SECONDS = 30.0
# Spend polls per run before continue-as-new (a day at 30 s is 2,880 polls, ~30k events).
DEFAULT_POLLS_PER_RUN = 500


def workflow_id_for(service: str) -> str:
    """The workflow id of a service's emergency: one running emergency per service."""
    return f"emergency:{service}"


class EmergencyPhase(StrEnum):
    """Where an emergency is; also the Phase search attribute."""

    activating = "activating"
    active = "active"
    ending = "ending"
    ended = "ended"
    failed = "failed"  # activation refused (no eligible node, unknown service, ...)


class EndReason(StrEnum):
    """Why an emergency ended."""

    expired = "expired"
    cancelled = "cancelled"
    cap_spent = "cap_spent"


class SelectedNodeInfo(BaseModel):
    """The node routing chose for the emergency, as callers see it."""

    node_id: str
    provider_name: str
    region: str
    success_rate: float
    cost_per_request: float
    health_score: float


class Activation(BaseModel):
    """What the activation decided and recorded."""

    coordination_id: str
    selected_node: SelectedNodeInfo
    routing_strategy: str
    strategy_reason: str = ""
    decision_reason: str = ""
    confidence_score: float
    estimated_cost: float
    started_at: datetime
    deadline: datetime
    # What the activation applied (api/schemas/emergency.py applied_optimizations); recorded
    # activations from before it was kept applied these three.
    applied_optimizations: list[str] = Field(
        default_factory=lambda: [
            "intelligent_routing",
            "backend_agent_coordination",
            "emergency_override",
        ]
    )


class OverrideState(BaseModel):
    """Everything the workflow must remember; carried over on continue-as-new."""

    phase: EmergencyPhase = EmergencyPhase.activating
    activation: Activation | None = None
    deadline: datetime | None = None
    total_minutes: int = 0
    extensions: int = 0
    extension_attempts: int = 0  # numbers ledger keys, so a failed attempt never reuses one
    spent: float = 0.0
    end_reason: EndReason | None = None
    end_detail: str = ""
    ended_at: datetime | None = None


class EmergencyOverrideInput(BaseModel):
    """Start input: the incident commander's request plus the coordination id the API chose."""

    service: str
    operation: str
    coordination_id: str
    emergency_reason: str
    business_justification: str
    max_budget_override: float
    duration_minutes: int
    requested_by: str = ""
    # "<caller>/<Idempotency-Key>" when the request carried one: a retry of the same request
    # finds the emergency it started while that emergency runs.
    idempotency_key: str = ""
    poll_interval_seconds: float = DEFAULT_POLL_SECONDS
    polls_per_run: int = DEFAULT_POLLS_PER_RUN
    carried: OverrideState | None = None  # set by continue-as-new only

    def same_request(self, other: EmergencyOverrideInput) -> bool:
        """Whether `other` asks for what this asked for (ids, timing and state aside)."""
        fields = (
            "service",
            "operation",
            "emergency_reason",
            "business_justification",
            "max_budget_override",
            "duration_minutes",
            "requested_by",
        )
        return all(getattr(self, name) == getattr(other, name) for name in fields)


class ExtendRequest(BaseModel):
    """Update `extend`: move the deadline later."""

    minutes: int
    reason: str
    requested_by: str = ""


class ExtendResult(BaseModel):
    """The deadline after an extension."""

    coordination_id: str
    previous_deadline: datetime
    deadline: datetime
    total_minutes: int
    extensions: int


class CancelRequest(BaseModel):
    """Update `cancel`: end the emergency now."""

    reason: str
    requested_by: str = ""


class EmergencyStatus(BaseModel):
    """Query `status`, and the workflow's result once ended."""

    workflow_id: str
    service: str
    coordination_id: str
    phase: EmergencyPhase
    started_at: datetime | None = None
    deadline: datetime | None = None
    remaining_seconds: float = 0.0
    duration_minutes: int = 0
    extensions: int = 0
    max_budget_override: float
    spent: float = 0.0
    selected_node: SelectedNodeInfo | None = None
    end_reason: EndReason | None = None
    end_detail: str = ""
    ended_at: datetime | None = None


class ActivateInput(BaseModel):
    """Activity `emergency.activate`."""

    step_key: str
    service: str
    operation: str
    coordination_id: str
    emergency_reason: str
    business_justification: str
    max_budget_override: float
    duration_minutes: int
    started_at: datetime
    deadline: datetime
    requested_by: str = ""


class ExtendInput(BaseModel):
    """Activity `emergency.extend`."""

    step_key: str
    coordination_id: str
    previous_deadline: datetime
    deadline: datetime
    minutes: int
    total_minutes: int
    extensions: int
    reason: str
    requested_by: str = ""


class SpendInput(BaseModel):
    """Activity `emergency.read_spend`."""

    coordination_id: str


class SpendReading(BaseModel):
    """Spend under the override and what the cheapest request of the service costs."""

    spent: float
    max_budget_override: float
    cheapest_cost: float | None = None

    def cap_spent(self) -> bool:
        """True when no further request can be charged to the override."""
        remaining = self.max_budget_override - self.spent
        if remaining <= 0.0:
            return True
        return self.cheapest_cost is not None and remaining < self.cheapest_cost


class DeactivateInput(BaseModel):
    """Activity `emergency.deactivate`."""

    step_key: str
    coordination_id: str
    end_reason: EndReason
    ended_at: datetime
    detail: str = ""
    requested_by: str = ""


class Deactivation(BaseModel):
    """The emergency's final figures."""

    spent: float
    ended_at: datetime
    end_reason: EndReason


class EmergencySteps:
    """The activities EmergencyOverrideWorkflow calls: name, input and output of each.

    Called by method reference; activities.emergency.EmergencyActivities implements them.
    """

    @activity.defn(name=ACTIVATE)
    def activate(self, data: ActivateInput) -> Activation:
        """Insert the active emergency, route with it and announce it."""
        raise NotImplementedError

    @activity.defn(name=EXTEND)
    def extend(self, data: ExtendInput) -> ExtendResult:
        """Move the active emergency's deadline and announce it."""
        raise NotImplementedError

    @activity.defn(name=READ_SPEND)
    def read_spend(self, data: SpendInput) -> SpendReading:
        """Spend charged to the override so far and the cheapest request of the service."""
        raise NotImplementedError

    @activity.defn(name=DEACTIVATE)
    def deactivate(self, data: DeactivateInput) -> Deactivation:
        """End the emergency in the store and announce it."""
        raise NotImplementedError
